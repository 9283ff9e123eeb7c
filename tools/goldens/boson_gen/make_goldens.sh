#!/usr/bin/env bash
# Regenerate tests/fixtures/higgs_gen_boson_tiny/ by running the ORIGINAL Higgs Audio v2 generation code
# (PyPI boson-multimodal==0.1.1, which pins transformers<4.47) in a private virtual environment.
#
# Usage:  bash tools/goldens/boson_gen/make_goldens.sh [OUTPUT_DIR]
#
#   BOSON_GEN_VENV  venv to create or reuse (default /tmp/tokenwave-boson-gen-venv); never the project's .venv
#   PYTHON          interpreter used to create the venv (default python3; the goldens were made with 3.11)
#   OUTPUT_DIR      default tests/fixtures/higgs_gen_boson_tiny
#
# Needs network access to PyPI only the first time (venv packages + the boson-multimodal wheel).
# Idempotent: re-running reuses the venv and rewrites the fixture with bit-identical content.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
VENV="${BOSON_GEN_VENV:-/tmp/tokenwave-boson-gen-venv}"
PYTHON="${PYTHON:-python3}"
OUT_DIR="${1:-$REPO/tests/fixtures/higgs_gen_boson_tiny}"

BOSON_VERSION="0.1.1"
# Exact pins of everything that can change the numbers or the tokenizer files; transformers 4.46.3 (with its
# tokenizers 0.20.3) is inside the original's `transformers>=4.45.1,<4.47` pin. torch==2.13.0 resolves to the
# CPU wheel in this environment. loguru / dacite / pandas are imported at module level by the original's
# serve engine and ChatML dataset code (pandas and dacite are only called for dict samples, not here).
PKGS=(torch==2.13.0 transformers==4.46.3 tokenizers==0.20.3 numpy==2.4.6 safetensors==0.8.0 einops==0.8.2
      loguru==0.7.3 dacite==1.9.2 pandas==3.1.1)

case "$(cd "$(dirname "$VENV")" 2>/dev/null && pwd)/$(basename "$VENV")" in
  "$REPO/.venv"|"$REPO/.venv/"*) echo "refusing to install into the project's .venv ($VENV)" >&2; exit 2 ;;
esac

venv_ok() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "${PKGS[@]}" <<'EOF' >/dev/null 2>&1
import importlib.metadata as md
import sys
for pin in sys.argv[1:]:
    name, ver = pin.split("==")
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

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tokenwave-boson-gen-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "[make_goldens] downloading boson-multimodal==$BOSON_VERSION"
"$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$WORK/dl" "boson-multimodal==$BOSON_VERSION"
WHEEL="$(ls "$WORK"/dl/boson_multimodal-"$BOSON_VERSION"-*.whl)"
"$VENV/bin/python" -m zipfile -e "$WHEEL" "$WORK/src"
WHEEL_SHA256="$("$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$WHEEL")"
echo "[make_goldens] $(basename "$WHEEL") sha256 $WHEEL_SHA256"

# Import path: our torchaudio stand-in and the import-only placeholders of the tokenizer goldens (the serve
# engine imports the codec module; nothing of it is called), the DAC copy vendored inside the wheel (imported
# as top-level `dac`), and the unpacked wheel itself.
PP="$REPO/tests/stubs:$REPO/tools/goldens/boson/stubs:$WORK/src/boson_multimodal/audio_processing/descriptaudiocodec:$WORK/src"

mkdir -p "$OUT_DIR"
env -u PYTHONHOME PYTHONPATH="$PP" PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false \
  BOSON_WHEEL_NAME="$(basename "$WHEEL")" BOSON_WHEEL_SHA256="$WHEEL_SHA256" \
  "$VENV/bin/python" "$HERE/make_goldens.py" --out "$OUT_DIR"
echo "[make_goldens] done: $OUT_DIR"
