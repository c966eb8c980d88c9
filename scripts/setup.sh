#!/usr/bin/env bash
# Idempotent set-up: apt packages, the .venv at the repo root, PyPI packages.
# A second run checks and skips in seconds; it reinstalls only when pyproject.toml or this file change.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: WordNet (concept graph), openclipart (demo and test data), CJK fonts (OCR tests),
# chromium + its driver (the dashboard's browser tests; Playwright drives it, no browser download).
APT_PACKAGES=(wordnet-base openclipart-png openclipart-svg fonts-noto-cjk fonts-wqy-microhei fonts-dejavu-core fontconfig make
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
stamp=.venv/.zcurate-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x .venv/bin/zcurate ]; then
  echo "setup: installing PyPI packages into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q -U pip setuptools wheel
  # torch/torchvision first, pinned to the releases that install together here (CPU and CUDA).
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[all,dev]"
  # RapidOCR's wheel ships the PP-OCRv4 ONNX models; --no-deps so that its opencv-python does not
  # sit beside paddlex's opencv-contrib-python (its other dependencies are in pyproject's [all]).
  .venv/bin/python -m pip install -q --no-deps "rapidocr-onnxruntime==1.4.4"
  echo "$want" > "$stamp"
fi
echo "setup: ok (.venv ready, apt packages present)"
