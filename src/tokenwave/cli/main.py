"""``tokenwave`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="tokenwave: audio <-> discrete tokens.", no_args_is_help=True, add_completion=False)

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model folder or hub id (default: $TOKENWAVE_MODEL, else the published "
                 "bosonai/higgs-audio-v2-tokenizer)."),
]


@app.callback()
def _main() -> None:
    """tokenwave: audio <-> discrete tokens."""


@app.command()
def demo(
    model: ModelOpt = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="24 kHz audio file (default: shipped example).")
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where to write codes and audio.")
    ] = Path("out"),
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    bandwidth: Annotated[float | None, typer.Option(help="kbps: 0.5, 1, 1.5 or 2 (default: all codebooks).")] = None,
) -> None:
    """Encode and decode an example recording and print what happened."""
    from ..api import ModelNotFoundError, TokenwaveError
    from ..demo import run_demo

    try:
        run_demo(model, input, output_dir, device=device, bandwidth=bandwidth, echo=typer.echo)
    except ModelNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except (TokenwaveError, ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


if __name__ == "__main__":  # pragma: no cover
    app()
