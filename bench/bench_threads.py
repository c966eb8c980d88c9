"""Torch intra-op threads for the S3-DiT trainer: 1 and 2 threads, all cores, and the trainer's
default (the CPUs the process may use, ``os.sched_getaffinity``), on a full training step.

The step is the trainer's: the flow-matching loss (``engine.s3dit.flow.RectifiedFlow``: logit-normal
timesteps, caption dropout), backward, gradient clipping and AdamW, on a batch of random latents
and ragged caption features, for each image size given. Each round runs ``--steps`` steps per
(size, threads) pair, the thread settings in a rotated order, so load from other processes hits
every setting alike; the reported time is the median over rounds of the mean step, and each
setting's ratio is its time over the default's (above 1: slower than the default). The machine's
load average before and after is recorded: on shared cores the figures move with other jobs.

Run by hand (never from the tests):

    PYTHONPATH=. .venv/bin/python bench/bench_threads.py --json bench/results-threads-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from engine.s3dit.flow import RectifiedFlow
from engine.s3dit.model import Condition, build_model
from engine.s3dit.resolution import tokens_per_image
from engine.s3dit.runtime import allowed_cpus


def git_state() -> tuple[str, bool]:
    """The checkout's short commit and whether it has uncommitted changes ("unknown" outside git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, dirty


def thread_settings() -> dict[str, int]:
    """Label -> thread count: 1, 2, every core of the machine, and the trainer's default."""
    return {"1": 1, "2": 2, "all": os.cpu_count() or 1, "default": allowed_cpus()}


def make_step(preset: str, size: int, batch: int, seed: int = 0):
    """A closure running one training step of ``preset`` on a fixed random batch."""
    torch.manual_seed(seed)
    model = build_model(preset)
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(6, 48, (batch,), generator=g)  # ragged, like MiniLM's caption tokens
    cap = torch.randn(batch, int(lens.max()), model.config.cap_feat_dim, generator=g)
    for i, n in enumerate(lens.tolist()):
        cap[i, n:] = 0
    x1 = torch.randn(batch, model.config.in_channels, size, size, generator=g)
    cond = Condition(cap, lens)
    flow = RectifiedFlow(model, torch.zeros(1, model.config.cap_feat_dim), patch_size=model.config.patch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    step_gen = torch.Generator().manual_seed(seed + 1)

    def step() -> None:
        loss, _ = flow.loss(x1, cond, step_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def time_steps(step, threads: int, steps: int) -> float:
    """Mean seconds per step at ``threads`` (one untimed step first: thread pool start-up)."""
    torch.set_num_threads(threads)
    step()
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - tic) / steps


def measure(preset: str, size: int, batch: int, rounds: int, steps: int) -> dict:
    """One (preset, size, batch): per distinct thread count, the mean step of each round."""
    settings = thread_settings()
    counts = sorted(set(settings.values()))
    step = make_step(preset, size, batch)
    per_round: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(rounds):
        for n in counts[r % len(counts) :] + counts[: r % len(counts)]:  # rotated order
            per_round[n].append(time_steps(step, n, steps))
    median = {n: statistics.median(v) for n, v in per_round.items()}
    default = median[settings["default"]]
    return {
        "preset": preset,
        "image": size,
        "tokens": tokens_per_image(size, size, build_model(preset).config.patch_size),
        "batch": batch,
        "seconds": {label: median[n] for label, n in settings.items()},
        "ratio_to_default": {label: median[n] / default for label, n in settings.items()},
        "rounds": {str(n): v for n, v in per_round.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="S3DiT-T/4")
    parser.add_argument("--sizes", default="32,64,128", help="Image sides (pixel space), comma-separated.")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per (size, threads) and round.")
    parser.add_argument("--json", help="Write the results here.")
    args = parser.parse_args(argv)
    commit, dirty = git_state()
    meta = {
        "commit": commit,
        "dirty": dirty,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "cpu_count": os.cpu_count(),
        "allowed_cpus": allowed_cpus(),
        "threads": thread_settings(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "loadavg_before": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(args.preset, size, args.batch, args.rounds, args.steps)
        results.append(row)
        cells = ", ".join(f"{k} {v:.3f} s" for k, v in row["seconds"].items())
        print(f"{args.preset} {size}px ({row['tokens']} tokens) x {args.batch}: {cells}", flush=True)
    meta["loadavg_after"] = list(os.getloadavg())
    out = {"meta": meta, "results": results}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return out


if __name__ == "__main__":
    main()
