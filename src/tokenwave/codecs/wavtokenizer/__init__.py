"""WavTokenizer (24 kHz, one 4096-entry codebook, 75 or 40 tokens/s)."""

from .config import PRESETS, WavTokenizerConfig, preset
from .model import WavTokenizer

__all__ = ["PRESETS", "WavTokenizer", "WavTokenizerConfig", "preset"]
