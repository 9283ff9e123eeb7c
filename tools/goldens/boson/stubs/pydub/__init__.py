"""Stub: import-only placeholder (boson_multimodal.serve.utils imports pydub; the tokenizer path does not)."""
class AudioSegment:  # pragma: no cover
    pass
