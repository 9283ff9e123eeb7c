"""Pieces the command modules share (no torch at import): option enums and the error exit."""

from __future__ import annotations

from enum import Enum

import typer


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class WavFormat(str, Enum):
    float = "float"
    pcm16 = "pcm16"


def error(message: str, code: int) -> typer.Exit:
    """Print ``error: message`` on stderr and return the ``typer.Exit(code)`` to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
