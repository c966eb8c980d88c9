"""The pay-off experiment in one command: noisy pool -> zcurate -> every arm x 3 seeds -> results.

    .venv/bin/python bench/bench_payoff.py                 # CPU configuration (~35 min, 2 cores)
    .venv/bin/python bench/bench_payoff.py --ablate        # then: one recipe step off per arm
    .venv/bin/python bench/bench_payoff.py --config gpu    # on a CUDA machine
    .venv/bin/python bench/bench_payoff.py --config tiny --work /tmp/p --results /tmp/p.json \
        --figures /tmp/p-figures                           # the plumbing in ~2 minutes

Writes ``bench/results-payoff-<config>.json`` and, in ``docs/assets/payoff/<config>/``, the
learning curves, the defect table and the sample grid (``curves.png``, ``defects.png``,
``samples.png``). The working files (pool, workspace, checkpoints) go to ``--work`` (default: the
temp dir); rerunning with the same ``--work`` resumes a killed run. See docs/payoff.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.payoff import report
from bench.payoff.arms import ROOT, write_json
from bench.payoff.experiment import CONFIGS, ablation, run_experiment, with_overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    parser.add_argument("--work", help="working folder (pool, workspace, runs); resumes when reused")
    parser.add_argument("--results", help="results JSON (default bench/results-payoff-CONFIG.json)")
    parser.add_argument("--figures", help="figures folder (default docs/assets/payoff/CONFIG)")
    parser.add_argument("--steps", type=int, help="override the config's optimizer steps")
    parser.add_argument("--seeds", type=int, help="override the config's number of seeds (0..N-1)")
    parser.add_argument(
        "--ablate", action="store_true", help="the curated arm beside one arm per recipe step turned off"
    )
    parser.add_argument(
        "--redraw", action="store_true", help="only redraw the curves and the defect table from --results"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: the CPUs this process may use)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    cfg = with_overrides(
        CONFIGS[args.config], steps=args.steps, seeds=tuple(range(args.seeds)) if args.seeds else None
    )
    if args.ablate:
        cfg = ablation(cfg)
    base = os.environ.get("ZCURATE_CACHE_DIR") or tempfile.gettempdir()
    # the ablation shares the main run's folder: its pool, workspace and manifests are reused
    work = args.work or os.path.join(base, f"zcurate-payoff-{args.config}")
    results_path = args.results or os.path.join(ROOT, "bench", f"results-payoff-{cfg.name}.json")
    figures = args.figures or os.path.join(ROOT, "docs", "assets", "payoff", cfg.name)
    if args.redraw:
        with open(results_path, encoding="utf-8") as f:
            results = json.load(f)
        draw_tables_and_curves(results, figures)
        print(f"redrew {figures}/curves.png and defects.png from {results_path}")
        return results
    command = [os.path.relpath(os.path.abspath(__file__), ROOT), *(sys.argv[1:] if argv is None else argv)]
    results = run_experiment(work, cfg, command=command)
    write_figures(results, figures, work, cfg)
    write_json(results_path, results)
    print(f"wrote {results_path} and {figures}/{{curves,defects,samples}}.png")
    for name, diff in results["comparisons"].items():
        loss, gap = diff["val_loss"], diff["val_gap"]
        print(
            f"  {name}: val_loss {loss['mean']:+.4f} +- {loss['std']:.4f}, "
            f"gap {gap['mean']:+.4f} +- {gap['std']:.4f} (n={loss['n']})"
        )
    return results


def draw_tables_and_curves(results: dict, folder: str) -> None:
    """curves.png and defects.png, from the results alone."""
    import matplotlib

    matplotlib.use("Agg")
    os.makedirs(folder, exist_ok=True)
    report.learning_curves(results).savefig(os.path.join(folder, "curves.png"), dpi=110, bbox_inches="tight")
    report.defect_figure(results).savefig(os.path.join(folder, "defects.png"), dpi=110, bbox_inches="tight")


def write_figures(results: dict, folder: str, work: str, cfg) -> None:
    """The curves and the defect table, and the sample grid from the first seed's checkpoints."""
    import pyarrow.parquet as pq

    draw_tables_and_curves(results, folder)
    first = min(cfg.seeds)
    checkpoints = {r["arm"]: r["checkpoint"] for r in results["runs"] if r["seed"] == first}
    evaluation = pq.read_table(os.path.join(work, "data", "eval.parquet")).slice(0, cfg.grid_prompts)
    report.sample_grid(
        checkpoints,
        evaluation["caption"].to_pylist(),
        evaluation["path"].to_pylist(),
        cfg,
        os.path.join(folder, "samples.png"),
    )


if __name__ == "__main__":
    main()
