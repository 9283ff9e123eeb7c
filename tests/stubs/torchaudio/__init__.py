"""Minimal stand-in for the `torchaudio` package (NOT the real library).
Test-only stand-in (not shipped with tokenwave), used by the reference oracles under tools/goldens/ and by the tests.

Only `torchaudio.functional.resample` is provided, because that is the single
torchaudio entry point used by the Higgs Audio v2 tokenizer code paths
(transformers' HiggsAudioV2TokenizerModel._extract_semantic_features and
boson_multimodal's HiggsAudioTokenizer.get_regress_target).
"""
from . import functional  # noqa: F401

__version__ = "0.0.0-stub"
