"""Run the pay-off experiment: pool, curation, every arm for every seed at equal compute, scores.

Every arm trains the same preset for the same optimizer steps x batch size with the same seeds,
learning-rate schedule and resolution; only its manifest differs. Each run is scored by
``engine.s3dit.validation`` on the clean evaluation set (fixed timesteps and noise, so every arm
sees the same terms) every ``val_every`` steps: the held-out loss, and the loss with a wrong caption
(their difference is the conditional gap). Nothing here is computed by the model that curated.

A killed experiment resumes: a finished run leaves ``result.json`` in its folder and is not redone;
the pool and the curated workspace are reused when their config is unchanged.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace

import pyarrow.parquet as pq

from bench.payoff import arms as arm_manifests
from bench.payoff.pool import PoolConfig, build_pool

ARMS = ("raw", "random", "curated", "active")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    pool: PoolConfig = field(default_factory=PoolConfig)
    preset: str = "S3DiT-T/4"
    resolution: int = 32
    steps: int = 500
    batch_size: int = 16
    seeds: tuple[int, ...] = (0, 1, 2)
    lr: float = 1e-3  # what tests/engine/s3dit/test_train.py trains this preset at (not tuned here)
    warmup: int = 50
    val_every: int = 50
    val_timesteps: int = 5
    feedback_every: int = 50  # the active arm's loss reports (the others report once, at the end)
    arms: tuple[str, ...] = ARMS
    device: str = "cpu"
    vae: str | None = None
    grid_prompts: int = 8
    sample_steps: int = 20
    guidance: float = 4.0
    num_cpus: int | None = None
    ablations: tuple[str, ...] = ()  # arms "curated-<name>": one recipe step off (arms.ABLATIONS)


CONFIGS = {
    # 2 CPU cores, ~35 minutes: 32 px pixel space, the smallest preset, 3 seeds x 4 arms x 500 steps
    "cpu": ExperimentConfig("cpu"),
    # a GPU: a larger preset, more steps, 64 px
    "gpu": ExperimentConfig(
        "gpu",
        preset="S3DiT-XS/2",
        resolution=64,
        steps=3000,
        batch_size=64,
        lr=3e-4,
        val_every=250,
        feedback_every=250,
        warmup=100,
        device="cuda",
    ),
    # the plumbing only (the notebook test): a small pool, a few steps, one seed
    "tiny": ExperimentConfig(
        "tiny",
        pool=PoolConfig(clean=40, eval=12, flood_images=2, flood_copies=4, scan_limit=1500),
        steps=6,
        batch_size=8,
        seeds=(0,),
        warmup=2,
        val_every=3,
        val_timesteps=2,
        feedback_every=3,
        grid_prompts=3,
        sample_steps=2,
    ),
}


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=arm_manifests.ROOT, capture_output=True, text=True
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def prepare_data(work: str, cfg: ExperimentConfig) -> dict:
    """The pool and evaluation set (reused when built with the same config)."""
    data = os.path.join(work, "data")
    summary_path = os.path.join(data, "pool.json")
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
        if summary["config"] == json.loads(json.dumps(asdict(cfg.pool))):
            return summary
        shutil.rmtree(data)
    tic = time.perf_counter()
    summary = build_pool(data, cfg.pool)
    summary["seconds"] = time.perf_counter() - tic
    arm_manifests.write_json(summary_path, summary)
    return summary


def prepare_curated(work: str, cfg: ExperimentConfig) -> dict:
    """``zcurate curate`` + ``zcurate manifest`` on the pool, and the ablated manifests the config
    asks for (what an earlier run of the same work folder did is reused)."""
    done_path = os.path.join(work, "curated.json")
    if os.path.exists(done_path):
        with open(done_path, encoding="utf-8") as f:
            done = json.load(f)
    else:
        workspace = os.path.join(work, "workspace")
        shutil.rmtree(workspace, ignore_errors=True)
        tic = time.perf_counter()
        pool = os.path.join(work, "data", "pool")
        path = arm_manifests.curate_and_build(pool, workspace, cfg.resolution, cfg.num_cpus)
        done = {"workspace": workspace, "manifest": path, "seconds": time.perf_counter() - tic}
    done.setdefault("ablations", {})
    for name in cfg.ablations:  # the same workspace, one recipe step off
        if name not in done["ablations"]:
            overrides = arm_manifests.ABLATIONS[name]
            done["ablations"][name] = arm_manifests.build_lowres(done["workspace"], cfg.resolution, overrides)
    arm_manifests.write_json(done_path, done)
    return done


def arm_manifest(work: str, arm: str, seed: int, curated: dict, raw_rows: int) -> tuple[str, str | None]:
    """The manifest an arm's run trains on, and its own workspace (None: a fresh scratch one)."""
    manifests = os.path.join(work, "manifests")
    if arm == "raw":
        return os.path.join(manifests, "raw.parquet"), None
    if arm.startswith("curated"):  # curated, or curated-<ablation>
        return os.path.join(manifests, f"{arm}.parquet"), None
    if arm == "random":
        path = os.path.join(manifests, f"random-s{seed}.parquet")
        if not os.path.exists(path):
            raw = pq.read_table(os.path.join(manifests, "raw.parquet"))
            pq.write_table(arm_manifests.random_manifest(raw, raw_rows, seed), path)
        return path, None
    # active: a copy of the curated workspace per seed, so each seed's feedback is its own
    workspace = os.path.join(work, "runs", f"active-s{seed}", "workspace")
    if not os.path.exists(workspace):
        shutil.copytree(curated["workspace"], workspace + ".tmp", dirs_exist_ok=True)
        os.replace(workspace + ".tmp", workspace)
    rel = os.path.relpath(curated["manifest"], curated["workspace"])
    return os.path.join(workspace, rel), workspace


def training_spec(cfg: ExperimentConfig, seed: int) -> dict:
    """What a run's training depends on besides its manifest: a finished run is reused only when
    its spec is this one (the same work folder may have seen another config)."""
    keys = ("preset", "resolution", "steps", "batch_size", "lr", "warmup", "val_every", "val_timesteps")
    keys += ("feedback_every", "device")
    return {**{k: getattr(cfg, k) for k in keys}, "vae": cfg.vae, "seed": seed}


def finished_result(path: str, spec: dict) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    return result if result.get("training") == spec else None


def same_as_curated(work: str, arm: str, spec: dict, manifest: str) -> dict | None:
    """An ablation whose manifest equals the curated one trains exactly as the curated arm did
    (same rows, weights and seed; the trainer is deterministic): its result, marked, or None."""
    if not arm.startswith("curated-"):
        return None
    curated = finished_result(os.path.join(work, "runs", f"curated-s{spec['seed']}", "result.json"), spec)
    if curated is None:
        return None
    columns = ["sample_id", "uri", "caption", "weight", "bucket_h", "bucket_w"]
    ours = pq.read_table(manifest, columns=columns)
    theirs = pq.read_table(os.path.join(work, "manifests", "curated.parquet"), columns=columns)
    if not ours.equals(theirs):
        return None
    return {**curated, "arm": arm, "same_manifest_as": "curated"}


def train_arm(
    work: str, cfg: ExperimentConfig, arm: str, seed: int, curated: dict, curated_rows: int, commit: str
) -> dict:
    """Train one arm for one seed (or read its finished result); ``commit``: the code running."""
    from engine.s3dit.train import main as train
    from engine.s3dit.train_config import TrainConfig

    run_dir = os.path.join(work, "runs", f"{arm}-s{seed}")
    result_path, spec = os.path.join(run_dir, "result.json"), training_spec(cfg, seed)
    finished = finished_result(result_path, spec)
    if finished is not None:
        return finished
    manifest, workspace = arm_manifest(work, arm, seed, curated, curated_rows)
    same = same_as_curated(work, arm, spec, manifest)
    if same is not None:
        arm_manifests.write_json(result_path, same)
        return same
    workspace = workspace or os.path.join(run_dir, "scratch")
    shutil.rmtree(os.path.join(workspace, "train"), ignore_errors=True)  # a killed run starts over
    train_cfg = TrainConfig(
        workspace=workspace,
        stages=["lowres"],
        manifests={"lowres": manifest},
        preset=cfg.preset,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup=cfg.warmup,
        seed=seed,
        vae=cfg.vae,
        device=cfg.device,
        feedback_every=cfg.feedback_every if arm == "active" else cfg.steps,
        checkpoint_every=cfg.steps,
        val_manifest=os.path.join(work, "manifests", "eval.parquet"),
        val_every=cfg.val_every,
        val_timesteps=cfg.val_timesteps,
        run_name="run",
        progress=False,
    )
    tic = time.perf_counter()
    summary = train(train_cfg)
    seconds = time.perf_counter() - tic
    manifest_rows = pq.read_metadata(manifest).num_rows
    result = {
        "arm": arm,
        "seed": seed,
        "commit": commit,
        "training": spec,
        "manifest_rows": manifest_rows,
        "seconds": seconds,
        "samples_drawn": cfg.steps * cfg.batch_size,
        "skipped_draws": len(summary["skipped"]),
        "manifests_followed": len(summary["refreshed"]),
        "train_loss": summary["losses"]["lowres"],
        "validation": [
            {k: v for k, v in row.items() if k != "val_loss_by_t"} | {"by_t": row["val_loss_by_t"]}
            for row in summary["validation"]
        ],
        "checkpoint": summary["checkpoint"],
    }
    arm_manifests.write_json(result_path, result)
    return result


def run_experiment(work: str, cfg: ExperimentConfig, log=print, command: list[str] | None = None) -> dict:
    """Everything but the figures: returns the results (see ``report.summarise``). ``command``:
    the command line that ran it, recorded in the results."""
    import torch

    from bench.payoff import report

    os.makedirs(work, exist_ok=True)
    started, code = time.time(), git_state()  # the code that runs: the checkout as the run starts
    log(f"payoff {cfg.name}: building the pool in {work}")
    pool = prepare_data(work, cfg)
    log(f"  {pool['pool_rows']} pool rows {pool['defects']}, {pool['eval_rows']} evaluation pairs")
    log("  zcurate curate + zcurate manifest --stage lowres")
    curated = prepare_curated(work, cfg)
    data = os.path.join(work, "data")
    truth, evaluation = (
        pq.read_table(os.path.join(data, "truth.parquet")),
        pq.read_table(os.path.join(data, "eval.parquet")),
    )
    curated_table = pq.read_table(curated["manifest"])
    manifests = os.path.join(work, "manifests")
    os.makedirs(manifests, exist_ok=True)
    pq.write_table(arm_manifests.raw_manifest(truth, cfg.resolution), os.path.join(manifests, "raw.parquet"))
    pq.write_table(
        arm_manifests.eval_manifest(evaluation, cfg.resolution), os.path.join(manifests, "eval.parquet")
    )
    arm_manifests.copy_manifest(curated["manifest"], os.path.join(manifests, "curated.parquet"))
    defects = arm_manifests.defect_table(truth, curated_table)
    ablated = {}
    for name, path in curated["ablations"].items():
        if name not in cfg.ablations:
            continue
        arm_manifests.copy_manifest(path, os.path.join(manifests, f"curated-{name}.parquet"))
        table = pq.read_table(path)
        ablated[name] = {"rows": table.num_rows, "defects": arm_manifests.defect_table(truth, table)}
    log(f"  curated manifest: {curated_table.num_rows} rows of {truth.num_rows} ({curated['seconds']:.0f} s)")
    runs = []
    for seed in cfg.seeds:
        for arm in cfg.arms:
            result = train_arm(work, cfg, arm, seed, curated, curated_table.num_rows, code["commit"])
            last = result["validation"][-1]
            scores = f"val_loss {last['val_loss']:.4f} gap {last['val_gap']:+.4f}"
            log(f"  {arm:8s} seed {seed}: {scores} ({result['seconds']:.0f} s)")
            runs.append(result)
    return report.summarise(
        cfg,
        pool=pool,
        curated={
            **curated,
            "rows": curated_table.num_rows,
            "defects": defects,
            "scores": arm_manifests.curation_scores(defects),
            "ablated": ablated,
        },
        runs=runs,
        meta={
            **code,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "seconds": time.time() - started,
            "command": " ".join(["python", *command]) if command else "",
        },
    )


def with_overrides(cfg: ExperimentConfig, **values) -> ExperimentConfig:
    return replace(cfg, **{k: v for k, v in values.items() if v is not None})


def ablation(cfg: ExperimentConfig) -> ExperimentConfig:
    """The curated arm beside one arm per ablated recipe step, same steps and seeds."""
    names = tuple(arm_manifests.ABLATIONS)
    return replace(
        cfg, name=f"{cfg.name}-ablation", ablations=names, arms=("curated", *(f"curated-{n}" for n in names))
    )
