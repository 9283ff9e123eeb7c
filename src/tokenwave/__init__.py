"""tokenwave: audio <-> discrete tokens for audio language models.

    >>> import tokenwave
    >>> tok = tokenwave.load_tokenizer("bosonai/higgs-audio-v2-tokenizer")   # doctest: +SKIP
    >>> enc = tok.encode(wave)                                                # doctest: +SKIP
    >>> audio = tok.decode(enc).audio                                         # doctest: +SKIP

Importing tokenwave loads nothing heavy; submodules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "AudioTokenizer": "tokenwave.api",
    "EncodedAudio": "tokenwave.api",
    "DecodedAudio": "tokenwave.api",
    "TokenwaveError": "tokenwave.api",
    "InvalidAudioError": "tokenwave.api",
    "InvalidCodesError": "tokenwave.api",
    "CheckpointError": "tokenwave.api",
    "ModelNotFoundError": "tokenwave.api",
    "CodesFileError": "tokenwave.api",
    "load_tokenizer": "tokenwave.loading",
    "load_audio": "tokenwave.audio",
    "write_audio": "tokenwave.audio",
    "read_codes": "tokenwave.codesfile",
    "write_codes": "tokenwave.codesfile",
    "encode_chunked": "tokenwave.streaming",
    "decode_chunked": "tokenwave.streaming",
    "StreamingDecoder": "tokenwave.streaming",
    "HiggsAudioTokenizer": "tokenwave.codecs.higgs",
    "HiggsConfig": "tokenwave.codecs.higgs",
    "WavTokenizer": "tokenwave.codecs.wavtokenizer",
    "WavTokenizerConfig": "tokenwave.codecs.wavtokenizer",
}

__all__ = [  # noqa: F822 - resolved lazily by __getattr__
    "__version__", "AudioTokenizer", "EncodedAudio", "DecodedAudio", "TokenwaveError", "InvalidAudioError",
    "InvalidCodesError", "CodesFileError", "CheckpointError", "ModelNotFoundError", "load_tokenizer",
    "HiggsAudioTokenizer", "HiggsConfig", "WavTokenizer", "WavTokenizerConfig",
    "load_audio", "write_audio", "read_codes", "write_codes",
    "encode_chunked", "decode_chunked", "StreamingDecoder",
]

if TYPE_CHECKING:  # pragma: no cover
    from .api import (
        AudioTokenizer,
        CheckpointError,
        CodesFileError,
        DecodedAudio,
        EncodedAudio,
        InvalidAudioError,
        InvalidCodesError,
        ModelNotFoundError,
        TokenwaveError,
    )
    from .audio import load_audio, write_audio  # noqa: F401
    from .codecs.higgs import HiggsAudioTokenizer, HiggsConfig  # noqa: F401
    from .codecs.wavtokenizer import WavTokenizer, WavTokenizerConfig  # noqa: F401
    from .codesfile import read_codes, write_codes  # noqa: F401
    from .loading import load_tokenizer  # noqa: F401
    from .streaming import StreamingDecoder, decode_chunked, encode_chunked  # noqa: F401


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tokenwave' has no attribute {name!r}")
