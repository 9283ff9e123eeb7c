"""The text side of Higgs Audio v2 prompts: the text tokenizer, transcript normalisation, speaker tags and
long-text chunking.

References: [O] = boson-ai/higgs-audio ``examples/generation.py`` (the original long-form / multi-speaker
script) and ``boson_multimodal`` 0.1.1; [T] = transformers 5.23 ``HiggsAudioV2Processor``. The rules below
are transcribed from [O]'s code; where ``spec_generation.md`` §4.1 says otherwise the code wins and the
difference is named in the docstring.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..api import CheckpointError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["TextTokenizer", "normalize_transcript", "speaker_tags", "SPEAKER_TAG", "CHINESE_PUNCTUATION",
           "SOUND_EVENT_TAGS", "split_by_speaker", "split_by_words", "chunk_transcript"]

#: A speaker tag in a transcript: ``[SPEAKER0]``, ``[SPEAKER1]`` ... ([O] ``re.compile(r"\[(SPEAKER\d+)\]")``).
SPEAKER_TAG = re.compile(r"\[SPEAKER(\d+)\]")

#: Full-width (Chinese) punctuation -> ASCII, applied in this order ([O] ``normalize_chinese_punctuation``).
#: Note the full-width comma becomes ``", "`` (with a space) and the ellipsis ``"..."``.
CHINESE_PUNCTUATION: tuple[tuple[str, str], ...] = (
    ("，", ", "), ("。", "."), ("：", ":"), ("；", ";"), ("？", "?"), ("！", "!"), ("（", "("), ("）", ")"),
    ("【", "["), ("】", "]"), ("《", "<"), ("》", ">"), ("“", '"'), ("”", '"'), ("‘", "'"), ("’", "'"),
    ("、", ","), ("—", "-"), ("…", "..."), ("·", "."), ("「", '"'), ("」", '"'), ("『", '"'), ("』", '"'),
)

#: Sound-event tags -> the model's ``<SE>`` special tokens, applied in this order ([O] ``main``).
#: ``[humming start]`` maps to ``<SE>[Humming]</SE>`` in [O]'s code; spec §4.1 writes ``<SE_s>[Humming]</SE_s>``
#: (the code is followed).
SOUND_EVENT_TAGS: tuple[tuple[str, str], ...] = (
    ("[laugh]", "<SE>[Laughter]</SE>"),
    ("[humming start]", "<SE>[Humming]</SE>"),
    ("[humming end]", "<SE_e>[Humming]</SE_e>"),
    ("[music start]", "<SE_s>[Music]</SE_s>"),
    ("[music end]", "<SE_e>[Music]</SE_e>"),
    ("[music]", "<SE>[Music]</SE>"),
    ("[sing start]", "<SE_s>[Singing]</SE_s>"),
    ("[sing end]", "<SE_e>[Singing]</SE_e>"),
    ("[applause]", "<SE>[Applause]</SE>"),
    ("[cheering]", "<SE>[Cheering]</SE>"),
    ("[cough]", "<SE>[Cough]</SE>"),
)

# A transcript ending with one of these gets no final "." ([O] main).
_FINAL_ENDINGS = (".", "!", "?", ",", ";", '"', "'", "</SE_e>", "</SE>")


def normalize_transcript(text: str) -> str:
    """Normalise a transcript exactly as [O] ``examples/generation.py`` does before prompting.

    In order: full-width punctuation -> ASCII (:data:`CHINESE_PUNCTUATION`); ``(`` and ``)`` -> a space;
    ``°F`` -> `` degrees Fahrenheit``, ``°C`` -> `` degrees Celsius``; sound-event tags
    (:data:`SOUND_EVENT_TAGS`, exact and case-sensitive); then per line: whitespace runs -> one space,
    ends stripped, blank lines dropped; the whole stripped; finally ``.`` appended unless the text ends
    with ``. ! ? , ; " '`` or ``</SE_e>``/``</SE>``. An empty or blank input therefore gives ``"."``, as in [O].
    Speaker tags are left untouched.
    """
    for zh, en in CHINESE_PUNCTUATION:
        text = text.replace(zh, en)
    text = text.replace("(", " ").replace(")", " ")
    text = text.replace("°F", " degrees Fahrenheit").replace("°C", " degrees Celsius")
    for tag, replacement in SOUND_EVENT_TAGS:
        text = text.replace(tag, replacement)
    text = "\n".join(" ".join(line.split()) for line in text.split("\n") if line.strip()).strip()
    if not text.endswith(_FINAL_ENDINGS):
        text += "."
    return text


def speaker_tags(text: str) -> list[int]:
    """The speaker numbers tagged in ``text`` (``[SPEAKER3]`` -> 3), without repeats, in [O]'s order.

    [O] sorts the tag *strings* (``sorted(set(findall))``), so ``SPEAKER10`` comes before ``SPEAKER2``; that
    order decides which speaker gets which default voice description, so it is kept.
    """
    return [int(tag[len("SPEAKER"):]) for tag in sorted({f"SPEAKER{m}" for m in SPEAKER_TAG.findall(text)})]


def split_by_speaker(text: str, *, max_turns: int = 1) -> list[str]:
    """Chunk a transcript by speaker turns ([O] ``prepare_chunk_text(chunk_method="speaker")``).

    Lines are stripped; a line starting with ``[SPEAKER`` (or ``<|speaker_id_start|>``) starts a new turn,
    any other line continues the current one (joined with ``\\n``); each turn is stripped and empty turns are
    dropped. With ``max_turns > 1`` consecutive turns are merged, ``max_turns`` per chunk, joined with ``\\n``.
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    turns: list[str] = []
    current = ""
    for line in text.split("\n"):
        line = line.strip()
        if line.startswith(("[SPEAKER", "<|speaker_id_start|>")):
            if current:
                turns.append(current.strip())
            current = line
        elif current:
            current += "\n" + line
        else:
            current = line
    if current:
        turns.append(current.strip())
    return ["\n".join(turns[i:i + max_turns]) for i in range(0, len(turns), max_turns)]


def split_by_words(text: str, *, max_words: int = 200) -> list[str]:
    """Chunk a transcript by words ([O] ``prepare_chunk_text(chunk_method="word")``; 200 = [O]'s CLI default).

    Paragraphs are split on ``\\n\\n``; each paragraph is cut into chunks of ``max_words`` words, words being
    the pieces of ``paragraph.split(" ")`` rejoined with ``" "``; the last chunk of every paragraph gets
    ``"\\n\\n"`` appended (as in [O]; the [T] template trims it, [O] tokenizes it).
    Differences from [O]: blank paragraphs are skipped ([O] emits a ``"\\n\\n"`` chunk); Chinese text is
    detected by a character count instead of ``langid`` (more than half of the letters are CJK ideographs)
    and cut into units (one per ideograph, one per run of other non-space characters, one per run of spaces)
    rejoined without separator, instead of ``jieba`` words, so Chinese chunks hold fewer words than in [O].
    """
    if max_words < 1:
        raise ValueError(f"max_words must be at least 1, got {max_words}")
    chunks: list[str] = []
    chinese = _is_chinese(text)
    for paragraph in text.split("\n\n"):
        if not paragraph.strip():
            continue
        if chinese:
            units, sep = _CJK_UNITS.findall(paragraph), ""
        else:
            units, sep = paragraph.split(" "), " "
        chunks.extend(sep.join(units[i:i + max_words]) for i in range(0, len(units), max_words))
        chunks[-1] += "\n\n"
    return chunks


def chunk_transcript(text: str, method: Literal["speaker", "word"] | None = None, *, max_words: int = 200,
                     max_turns: int = 1) -> list[str]:
    """Chunks for long-text generation: ``None`` -> ``[text]``, ``"speaker"`` -> :func:`split_by_speaker`,
    ``"word"`` -> :func:`split_by_words` ([O] ``prepare_chunk_text``)."""
    if method is None:
        return [text]
    if method == "speaker":
        return split_by_speaker(text, max_turns=max_turns)
    if method == "word":
        return split_by_words(text, max_words=max_words)
    raise ValueError(f"unknown chunk method {method!r}; use None, 'speaker' or 'word'")


_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_UNITS = re.compile(f"[{_CJK}]|[^{_CJK}\\s]+|\\s+")


def _is_chinese(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    cjk = sum(1 for c in letters if re.match(f"[{_CJK}]", c))
    return bool(letters) and 2 * cjk > len(letters)


class TextTokenizer:
    """The model's text tokenizer, read from a model folder with the ``tokenizers`` library.

    ``encode`` never adds special tokens (no BOS from a post-processor): both references put
    ``<|begin_of_text|>`` into the prompt text themselves ([O] in the first header, [T] through the
    template's ``bos_token``, and transformers' processor then tokenizes with ``add_special_tokens=False``).
    Special tokens written in the text (``<|eot_id|>``, ``<SE>`` ...) become their single ids.
    """

    def __init__(self, tokenizer: Tokenizer, *, bos_token: str = "<|begin_of_text|>",
                 eos_token: str = "<|end_of_text|>"):
        """``tokenizer``: a ``tokenizers.Tokenizer``; ``bos_token``/``eos_token`` must be tokens of it."""
        self._tokenizer = tokenizer
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.bos_token_id = self.token_id(bos_token)
        self.eos_token_id = self.token_id(eos_token)

    @classmethod
    def from_folder(cls, folder: str | Path) -> TextTokenizer:
        """Read ``tokenizer.json`` and (if present) ``bos_token``/``eos_token`` from ``tokenizer_config.json``.

        Raises :class:`~tokenwave.api.CheckpointError` when ``tokenizer.json`` is missing or unreadable, or
        when the ``tokenizers`` package is not installed.
        """
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{folder}: no tokenizer.json (the text tokenizer of a Higgs Audio model folder)")
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise CheckpointError("reading a text tokenizer needs the 'tokenizers' package (pip install "
                                  "tokenizers)") from e
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust library raises plain Exception subclasses
            raise CheckpointError(f"{path}: not a readable tokenizers file ({e})") from e
        kwargs = {}
        config_path = folder / "tokenizer_config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text(encoding="utf-8"))
            for key in ("bos_token", "eos_token"):
                value = config.get(key)
                if isinstance(value, dict):
                    value = value.get("content")
                if isinstance(value, str):
                    kwargs[key] = value
        return cls(tokenizer, **kwargs)

    def token_id(self, token: str) -> int:
        """The id of a single (special) token; raises ``KeyError`` naming the token if it is not in the vocabulary."""
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise KeyError(f"token {token!r} is not in the text tokenizer's vocabulary")
        return token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without added special tokens."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (special tokens kept unless ``skip_special_tokens``)."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)
