"""Higgs Audio v2 tokenizer (24 kHz, 25 frames/s, 8 x 1024 residual VQ)."""

from .config import HiggsConfig
from .model import HiggsAudioTokenizer

__all__ = ["HiggsAudioTokenizer", "HiggsConfig"]
