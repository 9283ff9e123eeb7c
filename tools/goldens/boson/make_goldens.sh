#!/usr/bin/env bash
# Regenerate tests/fixtures/higgs_boson_tiny/ by running the ORIGINAL Higgs Audio v2 tokenizer code
# (PyPI boson-multimodal==0.1.1, which pins transformers<4.47) in a private virtual environment.
#
# Usage:  bash tools/goldens/boson/make_goldens.sh [OUTPUT_DIR]
#
#   BOSON_VENV   venv to create or reuse (default /tmp/tokenwave-boson-venv); never the project's .venv
#   PYTHON       interpreter used to create the venv (default python3; the goldens were made with 3.11)
#   OUTPUT_DIR   default tests/fixtures/higgs_boson_tiny
#
# Needs network access to PyPI only the first time (venv packages + the boson-multimodal wheel).
# Idempotent: re-running reuses the venv and rewrites the fixture with bit-identical content.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
VENV="${BOSON_VENV:-/tmp/tokenwave-boson-venv}"
PYTHON="${PYTHON:-python3}"
OUT_DIR="${1:-$REPO/tests/fixtures/higgs_boson_tiny}"

BOSON_VERSION="0.1.1"
# Exact pins of everything that can change the numbers; transformers 4.46.3 is inside the original's
# `transformers>=4.45.1,<4.47` pin.  torch==2.13.0 resolves to the CPU wheel in this environment.
# (loguru / dacite / pandas are only needed by other boson_multimodal modules, not by the tokenizer.)
PKGS=(torch==2.13.0 transformers==4.46.3 numpy==2.4.6 safetensors==0.8.0 einops==0.8.2)

TAG=boson
# shellcheck source=../boson_common.sh
source "$HERE/../boson_common.sh"
boson_venv
boson_wheel

mkdir -p "$OUT_DIR"
# Import path: our torchaudio stand-in and the import-only placeholders.
boson_run "$REPO/tests/stubs:$HERE/stubs" "$HERE/make_goldens.py" --out "$OUT_DIR"
echo "[make_goldens] done: $OUT_DIR"
