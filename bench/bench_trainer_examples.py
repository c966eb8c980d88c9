"""Time every trainer example of docs/trainer.md, as written, on the demo workspace.

Each example's command is the exact text the page shows (``EXAMPLES`` below; tests/test_docs.py
checks that the page has each command with the duration this script measured beside it). They
run in order, with bash, in a scratch folder holding ``workspaces/demo``: a copy of a demo
workspace that ``zcurate demo`` (``make demo``) made, so the repository's own ``workspaces/demo``
is left as it is, and ``zcurate`` is the one beside this Python. The results file records each
example's wall time, exit code and the last lines it printed, with the machine's CPU count and
load average before and after.

Run by hand (never from the tests), after ``make demo`` or ``zcurate demo -w /tmp/demo``:

    PYTHONPATH=. .venv/bin/python bench/bench_trainer_examples.py --demo workspaces/demo \\
        --json bench/results-trainer-examples.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

# name -> the command exactly as docs/trainer.md shows it (run in this order: the sample needs the
# quick start's checkpoint).
EXAMPLES = {
    "quick_start_train": (
        "zcurate train -w workspaces/demo --preset S3DiT-T/4 --resolution 64 --steps 300 --batch-size 16 \\\n"
        "  --lr 1e-3 --warmup 20 --val-fraction 0.05 --val-every 100 --threads 1"
    ),
    "quick_start_sample": (
        "zcurate sample --checkpoint workspaces/demo/train/s3dit/checkpoints/latest.pt \\\n"
        '  --prompt "a red apple" --prompt "a black cat" --out grid.png'
    ),
    "full_size_estimate": (
        "zcurate train -w workspaces/demo --preset S3DiT-T/4 --steps 1 --batch-size 16 --run-name full-size"
    ),
    "whole_loop": (
        "for stage in omni sft; do zcurate manifest -w workspaces/demo --stage $stage; done\n"
        "zcurate train -w workspaces/demo --stages lowres,omni,sft --preset S3DiT-T/4 --resolution 32 \\\n"
        "  --steps 6 --batch-size 4 --feedback-every 3 --run-name loop"
    ),
}
OUTPUT_LINES = 40  # the last lines of each example's output kept in the results file
PROGRESS = re.compile(r"\d+%\|")  # a progress bar's redraw (tqdm): not kept


def duration(seconds: float) -> str:
    """How the page writes a measured wall time: '48 s', '5 min 07 s'."""
    s = round(seconds)
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"


def run_example(command: str, cwd: str, env: dict, log_path: str) -> dict:
    """Run one example with bash in ``cwd``; its wall time, exit code and last output lines."""
    tic = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
    wall = time.perf_counter() - tic
    with open(log_path, encoding="utf-8", errors="replace") as f:
        text = f.read().replace("\r", "\n")
    lines = [line.rstrip() for line in text.splitlines() if line.strip() and not PROGRESS.search(line)]
    return {"wall_s": wall, "exit_code": proc.returncode, "output": lines[-OUTPUT_LINES:]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True, help="A demo workspace made by `zcurate demo` (copied).")
    parser.add_argument("--work", help="Scratch folder (default: a new one under the temp dir).")
    parser.add_argument("--only", help="Comma-separated example names (default: all, in order).")
    parser.add_argument("--json", help="Write the results here.")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_threads import git_state  # the sibling script's (it imports torch: not at module level)

    names = args.only.split(",") if args.only else list(EXAMPLES)
    work = args.work or tempfile.mkdtemp(prefix="zcurate-trainer-examples-")
    target = os.path.join(work, "workspaces", "demo")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(args.demo, target, ignore=shutil.ignore_patterns("train", "feedback"))
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    env["PYTHONUNBUFFERED"] = "1"
    commit, dirty = git_state()
    meta = {
        "commit": commit,
        "dirty": dirty,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "cpu_count": os.cpu_count(),
        "allowed_cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "loadavg_before": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    examples = {}
    for name in names:
        result = run_example(EXAMPLES[name], work, env, os.path.join(work, f"{name}.log"))
        examples[name] = {"command": EXAMPLES[name], **result}
        print(f"{name}: {duration(result['wall_s'])} (exit {result['exit_code']})", flush=True)
    meta["loadavg_after"] = list(os.getloadavg())
    out = {"meta": meta, "examples": examples}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return out


if __name__ == "__main__":
    main()
