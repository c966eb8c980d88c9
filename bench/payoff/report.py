"""The experiment's results: the summary per arm (mean +- std over seeds), figures, a sample grid.

:func:`summarise` turns the runs into the results JSON; :func:`learning_curves`,
:func:`defect_figure` draw from that JSON alone (the notebook calls them on the committed file);
:func:`sample_grid` draws images from each arm's first-seed checkpoint for held-out prompts.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

METRICS = ("val_loss", "val_loss_wrong_caption", "val_gap")


def mean_std(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def arm_summary(runs: list[dict]) -> dict:
    """Final scores (last validation) over seeds, compute, and the curve's mean and std per step."""
    finals = {m: mean_std([r["validation"][-1][m] for r in runs]) for m in METRICS}
    steps = [row["step"] for row in runs[0]["validation"]]
    curves = {
        m: {
            "mean": [float(np.mean([r["validation"][i][m] for r in runs])) for i in range(len(steps))],
            "std": [
                float(np.std([r["validation"][i][m] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
                for i in range(len(steps))
            ],
        }
        for m in METRICS
    }
    return {
        "final": finals,
        "steps": steps,
        "curves": curves,
        "manifest_rows": [r["manifest_rows"] for r in runs],
        "samples_drawn": runs[0]["samples_drawn"],
        "skipped_draws": [r["skipped_draws"] for r in runs],
        "manifests_followed": [r["manifests_followed"] for r in runs],
        "seconds": mean_std([r["seconds"] for r in runs]),
    }


def paired_difference(runs: list[dict], arm: str, baseline: str, metric: str) -> dict:
    """``arm - baseline`` of a final metric, seed by seed (the same seed: same init and noise)."""
    by_seed = {(r["arm"], r["seed"]): r["validation"][-1][metric] for r in runs}
    seeds = sorted(
        {r["seed"] for r in runs if r["arm"] == arm} & {r["seed"] for r in runs if r["arm"] == baseline}
    )
    return mean_std([by_seed[(arm, s)] - by_seed[(baseline, s)] for s in seeds]) if seeds else {}


def summarise(cfg, pool: dict, curated: dict, runs: list[dict], meta: dict) -> dict:
    arms = [a for a in cfg.arms if any(r["arm"] == a for r in runs)]
    summary = {a: arm_summary([r for r in runs if r["arm"] == a]) for a in arms}
    pairs = [(arm, base) for arm in ("curated", "active") for base in ("raw", "random")]
    pairs += [(arm, "curated") for arm in arms if arm.startswith("curated-")]  # ablations
    comparisons = {
        f"{arm} vs {base}": {m: paired_difference(runs, arm, base, m) for m in ("val_loss", "val_gap")}
        for arm, base in pairs
        if arm in arms and base in arms
    }
    return {
        "meta": meta,
        "config": asdict(cfg),
        "pool": pool,
        "curated": curated,
        "arms": summary,
        "comparisons": comparisons,
        "runs": runs,
    }


# --- figures (matplotlib, from the results alone) -----------------------------------------------------


def arms_in_order(results: dict) -> list[tuple[str, dict]]:
    """(arm, summary) in the config's arm order (the JSON file's keys are sorted)."""
    return [(arm, results["arms"][arm]) for arm in results["config"]["arms"] if arm in results["arms"]]


COLOURS = {
    "raw": "#d62728",
    "random": "#7f7f7f",
    "curated": "#1f77b4",
    "active": "#2ca02c",
    "curated-no-filters": "#9467bd",
    "curated-no-dedup": "#ff7f0e",
    "curated-no-tilts": "#17becf",
    "curated-no-balance": "#8c564b",
}


def paired_curves(results: dict, arm: str, baseline: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """``arm - baseline`` held-out loss per evaluation step, seed by seed: steps, mean, std."""
    runs = results["runs"]
    curve = {(r["arm"], r["seed"]): [row["val_loss"] for row in r["validation"]] for r in runs}
    seeds = sorted(s for a, s in curve if a == arm and (baseline, s) in curve)
    diffs = np.asarray([np.subtract(curve[(arm, s)], curve[(baseline, s)]) for s in seeds])  # (seeds, steps)
    std = diffs.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros(diffs.shape[1])
    return results["arms"][arm]["steps"], diffs.mean(axis=0), std


def learning_curves(results: dict):
    """Three panels against the optimizer step, each the mean over seeds with a +-1 std band: the
    held-out loss (after the first steep drop), its difference to the baseline arm of the same seed
    (raw, or curated in an ablation), and the conditional gap."""
    import matplotlib.pyplot as plt

    baseline = "raw" if "raw" in results["arms"] else "curated"
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for arm, s in arms_in_order(results):
        colour, steps = COLOURS.get(arm), np.asarray(s["steps"])
        late = steps >= steps.max() / 5  # the first fifth is the steep drop every arm shares
        for ax, metric, keep in ((axes[0], "val_loss", late), (axes[2], "val_gap", slice(None))):
            mean, std = np.asarray(s["curves"][metric]["mean"]), np.asarray(s["curves"][metric]["std"])
            ax.plot(steps[keep], mean[keep], label=arm, color=colour)
            ax.fill_between(steps[keep], (mean - std)[keep], (mean + std)[keep], color=colour, alpha=0.2)
        _, mean, std = paired_curves(results, arm, baseline)
        axes[1].plot(steps, mean, label=arm, color=colour)
        axes[1].fill_between(steps, mean - std, mean + std, color=colour, alpha=0.15)
    titles = (
        "held-out loss (true captions)",
        f"held-out loss minus the {baseline} arm's (same seed)",
        "conditional gap (wrong - true caption loss)",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    cfg = results["config"]
    fig.suptitle(f"{cfg['preset']} at {cfg['resolution']} px, {len(cfg['seeds'])} seed(s): mean +- std")
    fig.tight_layout()
    return fig


def defect_rows(results: dict) -> list[list[str]]:
    """The defect table as text cells: class, pool rows, kept, removed, pool share, weight share."""
    rows = []
    for r in results["curated"]["defects"]:
        removed = "" if r["kept_fraction"] is None else f"{1 - r['kept_fraction']:.0%}"
        rows.append(
            [
                r["class"],
                str(r["pool_rows"]),
                str(r["kept"]),
                removed,
                f"{r['pool_share']:.1%}",
                f"{r['weight_share']:.1%}",
            ]
        )
    return rows


DEFECT_HEADER = ["class", "pool rows", "kept", "removed", "share of pool", "share of weight"]


def defect_figure(results: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * (len(results["curated"]["defects"]) + 2)))
    ax.axis("off")
    table = ax.table(cellText=defect_rows(results), colLabels=DEFECT_HEADER, loc="center")
    table.scale(1, 1.4)
    ax.set_title("what the curated manifest kept of each injected defect")
    fig.tight_layout()
    return fig


def sample_grid(checkpoints: dict[str, str], prompts: list[str], real: list[str], cfg, path: str) -> None:
    """One row per arm (first seed's EMA weights, named on the left), one column per held-out
    prompt, the real images on top; the same noise for every arm."""
    import torch
    from PIL import Image, ImageDraw

    from engine.s3dit.data import resize_crop, to_image
    from engine.s3dit.sample import load_for_sampling

    size, pad, zoom, label_w = cfg.resolution, 2, max(1, 96 // cfg.resolution), 90
    rows = {"real": [resize_crop(Image.open(p).convert("RGB"), size, size) for p in real]}
    device = "cuda" if cfg.device == "cuda" and torch.cuda.is_available() else "cpu"
    for arm, checkpoint in checkpoints.items():
        images = sample_images_for(load_for_sampling(checkpoint, device), prompts, cfg, size)
        rows[arm] = [to_image(x) for x in images]
    cell = size * zoom + pad
    grid = Image.new("RGB", (label_w + len(prompts) * cell, len(rows) * cell), "white")
    draw = ImageDraw.Draw(grid)
    for i, (name, images) in enumerate(rows.items()):
        draw.text((4, i * cell + cell // 2 - 6), name, fill="black")
        for j, image in enumerate(images):
            grid.paste(
                image.resize((size * zoom,) * 2, Image.Resampling.NEAREST), (label_w + j * cell, i * cell)
            )
    grid.save(path)


def sample_images_for(loaded: dict, prompts: list[str], cfg, size: int):
    from engine.s3dit.sample import sample_images

    return sample_images(loaded, prompts, cfg.sample_steps, cfg.guidance, seed=0, height=size, width=size)


# --- the tables docs/payoff.md quotes (tests/test_docs.py renders them again from the file) -----------


def pm(stat: dict, digits: int = 4, sign: bool = False) -> str:
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{fmt.format(stat['mean'])} ± {stat['std']:.{digits}f}"


def arm_table(results: dict) -> list[str]:
    """| arm | manifest rows | draws | skipped draws | held-out loss | conditional gap | s per run |"""
    rows = []
    for arm, s in arms_in_order(results):
        rows.append(
            f"| {arm} | {s['manifest_rows'][0]:,} | {s['samples_drawn']:,} | {sum(s['skipped_draws']):,} "
            f"| {pm(s['final']['val_loss'])} | {pm(s['final']['val_gap'], 5, sign=True)} "
            f"| {s['seconds']['mean']:.0f} |"
        )
    return rows


def comparison_table(results: dict) -> list[str]:
    """| comparison | held-out loss difference | gap difference | seeds |"""
    rows = []
    for name, d in results["comparisons"].items():
        loss, gap = pm(d["val_loss"], sign=True), pm(d["val_gap"], 5, sign=True)
        rows.append(f"| {name} | {loss} | {gap} | {d['val_loss']['n']} |")
    return rows


def defect_table_md(results: dict) -> list[str]:
    """| class | pool rows | kept | removed | share of pool | share of weight |"""
    return ["| " + " | ".join(cells) + " |" for cells in defect_rows(results)]


def ablation_kept_table(results: dict) -> list[str]:
    """| manifest | rows | kept of each truth class ... |: the curated manifest and each ablated one."""
    tables = {"curated": (results["curated"]["rows"], results["curated"]["defects"])}
    for name, ablated in sorted(results["curated"].get("ablated", {}).items()):
        tables[f"curated-{name}"] = (ablated["rows"], ablated["defects"])
    rows = []
    for arm, (count, defects) in tables.items():
        kept = " | ".join(f"{r['kept']}/{r['pool_rows']}" for r in defects)
        rows.append(f"| {arm} | {count} | {kept} |")
    return rows
