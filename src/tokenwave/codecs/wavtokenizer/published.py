"""The published WavTokenizer checkpoints by name, fetched from the Hugging Face hub where a network exists.

The reference code publishes Lightning ``.ckpt`` files (no ``config.json``) in repositories of the user
``novateur``; some repositories hold several. Names below come from the WavTokenizer README and the
loaders that use these files (spec section 4.1); they are not verified against the hub from here.

=====================================  =================================================  ==========
name                                   hub file                                           preset
=====================================  =================================================  ==========
``wavtokenizer-small-40``              novateur/WavTokenizer/WavTokenizer_small_600_24k_4096.ckpt   40
``wavtokenizer-small-75``              novateur/WavTokenizer/WavTokenizer_small_320_24k_4096.ckpt   75
``wavtokenizer-medium-speech-75``      novateur/WavTokenizer-medium-speech-75token/...              75
``wavtokenizer-medium-music-audio-75`` novateur/WavTokenizer-medium-music-audio-75token/...         75
``wavtokenizer-large-40``              novateur/WavTokenizer-large-unify-40token/...                40
``wavtokenizer-large-speech-75``       novateur/WavTokenizer-large-speech-75token/...               75
=====================================  =================================================  ==========

A repository with a single checkpoint may also be named by its hub id, and any file by
``owner/repo/file.ckpt``.
"""

from __future__ import annotations

from pathlib import Path

from ...api import ModelNotFoundError

#: name -> (hub repository, checkpoint file, preset)
PUBLISHED: dict[str, tuple[str, str, str]] = {
    "wavtokenizer-small-40": ("novateur/WavTokenizer", "WavTokenizer_small_600_24k_4096.ckpt", "wavtokenizer-40"),
    "wavtokenizer-small-75": ("novateur/WavTokenizer", "WavTokenizer_small_320_24k_4096.ckpt", "wavtokenizer-75"),
    "wavtokenizer-medium-speech-75": ("novateur/WavTokenizer-medium-speech-75token",
                                      "wavtokenizer_medium_speech_320_24k_v2.ckpt", "wavtokenizer-75"),
    "wavtokenizer-medium-music-audio-75": ("novateur/WavTokenizer-medium-music-audio-75token",
                                           "wavtokenizer_medium_music_audio_320_24k_v2.ckpt", "wavtokenizer-75"),
    "wavtokenizer-large-40": ("novateur/WavTokenizer-large-unify-40token", "wavtokenizer_large_unify_600_24k.ckpt",
                              "wavtokenizer-40"),
    "wavtokenizer-large-speech-75": ("novateur/WavTokenizer-large-speech-75token",
                                     "wavtokenizer_large_speech_320_v2.ckpt", "wavtokenizer-75"),
}


def published_entry(name: str) -> tuple[str, str, str | None] | None:
    """``(repo, file, preset or None)`` for a published name, a single-checkpoint hub id, or
    ``owner/repo/file.ckpt``; None when ``name`` is none of these."""
    if name in PUBLISHED:
        return PUBLISHED[name]
    by_repo = [v for v in PUBLISHED.values() if v[0] == name]
    if len(by_repo) == 1:
        return by_repo[0]
    if len(by_repo) > 1:
        choices = ", ".join(k for k, v in PUBLISHED.items() if v[0] == name)
        raise ModelNotFoundError(f"hub repository {name!r} holds several WavTokenizer checkpoints: name one of "
                                 f"{choices}, or pass {name}/FILE.ckpt")
    parts = name.split("/")
    if len(parts) == 3 and parts[2].endswith(".ckpt") and not Path(name).exists():
        return f"{parts[0]}/{parts[1]}", parts[2], None
    return None


def fetch(repo: str, filename: str, *, revision: str | None = None) -> Path:
    """Local path of ``filename`` of hub repository ``repo``: from the Hugging Face cache, else downloaded.

    Raises:
        ModelNotFoundError: not cached and the hub cannot be reached, or no such repository or file.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from ...loading import _hub_unreachable

    cached = try_to_load_from_cache(repo, filename, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    how = (f"Get it on a machine with network access (`hf download {repo} {filename} --local-dir DIR`), copy it "
           f"here and pass the .ckpt path as the model.")
    offline = _hub_unreachable()
    if offline:
        raise ModelNotFoundError(f"{repo}/{filename} is not in the local Hugging Face cache and the hub cannot be "
                                 f"reached ({offline}). {how}")
    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except Exception as e:  # no such repository or file, gated, network failure
        raise ModelNotFoundError(f"cannot download {repo}/{filename} ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}). {how}") from e
