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

case "$(cd "$(dirname "$VENV")" 2>/dev/null && pwd)/$(basename "$VENV")" in
  "$REPO/.venv"|"$REPO/.venv/"*) echo "refusing to install into the project's .venv ($VENV)" >&2; exit 2 ;;
esac

venv_ok() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import importlib.metadata as md
want = {"torch": "2.13.0", "transformers": "4.46.3", "numpy": "2.4.6", "safetensors": "0.8.0", "einops": "0.8.2"}
for name, ver in want.items():
    have = md.version(name).split("+")[0]
    assert have == ver, (name, have, ver)
for name in ("torchaudio", "librosa"):   # must come from the stubs, never from the venv
    try:
        md.version(name)
    except md.PackageNotFoundError:
        continue
    raise SystemExit(f"{name} is installed in the venv")
EOF
}

if venv_ok; then
  echo "[make_goldens] reusing venv $VENV"
else
  echo "[make_goldens] creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet "${PKGS[@]}"
  venv_ok || { echo "venv $VENV does not have the pinned packages" >&2; exit 1; }
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tokenwave-boson-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "[make_goldens] downloading boson-multimodal==$BOSON_VERSION"
"$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$WORK/dl" "boson-multimodal==$BOSON_VERSION"
WHEEL="$(ls "$WORK"/dl/boson_multimodal-"$BOSON_VERSION"-*.whl)"
"$VENV/bin/python" -m zipfile -e "$WHEEL" "$WORK/src"
WHEEL_SHA256="$("$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$WHEEL")"
echo "[make_goldens] $(basename "$WHEEL") sha256 $WHEEL_SHA256"

# Import path: our torchaudio stand-in, the import-only placeholders, the DAC copy vendored inside the
# wheel (the original imports it as top-level `dac`), and the unpacked wheel itself.
PP="$REPO/tests/stubs:$HERE/stubs:$WORK/src/boson_multimodal/audio_processing/descriptaudiocodec:$WORK/src"

mkdir -p "$OUT_DIR"
env -u PYTHONHOME PYTHONPATH="$PP" PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 \
  BOSON_WHEEL_NAME="$(basename "$WHEEL")" BOSON_WHEEL_SHA256="$WHEEL_SHA256" \
  "$VENV/bin/python" "$HERE/make_goldens.py" --out "$OUT_DIR"
echo "[make_goldens] done: $OUT_DIR"
