# Shared by tools/goldens/boson/make_goldens.sh (tokenizer goldens) and tools/goldens/boson_gen/make_goldens.sh
# (generation goldens): a private virtual environment with exact pins, the unpacked boson-multimodal wheel, and
# the run of a golden writer inside them. Source it (bash) after setting:
#
#   REPO           the tokenwave checkout
#   VENV, PYTHON   the venv to create or reuse (never the project's .venv) and the interpreter that creates it
#   PKGS           array of exact pins (name==version) installed into the venv
#   BOSON_VERSION  the boson-multimodal version whose wheel is unpacked
#   TAG            a short name for temporary folders

boson_refuse_project_venv() {
  case "$(cd "$(dirname "$VENV")" 2>/dev/null && pwd)/$(basename "$VENV")" in
    "$REPO/.venv"|"$REPO/.venv/"*) echo "refusing to install into the project's .venv ($VENV)" >&2; exit 2 ;;
  esac
}

boson_venv_ok() {  # every pin installed at its version; torchaudio / librosa absent (they come from the stubs)
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "${PKGS[@]}" <<'PYEOF' >/dev/null 2>&1
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
PYEOF
}

boson_venv() {  # create the venv, or reuse it when it holds exactly the pins
  boson_refuse_project_venv
  if boson_venv_ok; then
    echo "[make_goldens] reusing venv $VENV"
  else
    echo "[make_goldens] creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet "${PKGS[@]}"
    boson_venv_ok || { echo "venv $VENV does not have the pinned packages" >&2; exit 1; }
  fi
}

boson_wheel() {  # download and unpack the wheel into $WORK/src (removed on exit); sets WHEEL and WHEEL_SHA256
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/tokenwave-$TAG-wheel.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
  echo "[make_goldens] downloading boson-multimodal==$BOSON_VERSION"
  "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$WORK/dl" "boson-multimodal==$BOSON_VERSION"
  WHEEL="$(ls "$WORK"/dl/boson_multimodal-"$BOSON_VERSION"-*.whl)"
  "$VENV/bin/python" -m zipfile -e "$WHEEL" "$WORK/src"
  WHEEL_SHA256="$("$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$WHEEL")"
  echo "[make_goldens] $(basename "$WHEEL") sha256 $WHEEL_SHA256"
}

boson_run() {  # boson_run EXTRA_PYTHONPATH SCRIPT ARGS...: the writer, offline and single-threaded, with on its
  # path the given folders, the DAC copy vendored inside the wheel (imported as top-level `dac`) and the wheel
  local extra="$1"; shift
  local pp="$extra:$WORK/src/boson_multimodal/audio_processing/descriptaudiocodec:$WORK/src"
  env -u PYTHONHOME PYTHONPATH="$pp" PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 \
    TOKENIZERS_PARALLELISM=false BOSON_WHEEL_NAME="$(basename "$WHEEL")" BOSON_WHEEL_SHA256="$WHEEL_SHA256" \
    "$VENV/bin/python" "$@"
}
