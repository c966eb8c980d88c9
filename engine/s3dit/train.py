"""Train the bundled S3-DiT on manifests, stage by stage (DiT's ``train.py`` shape).

``main(cfg)`` runs setup, model/EMA, data (from a manifest only), the loop, and checkpoints
(``model, ema, opt, cfg, step`` plus the sampler state). Stages run in order (``lowres, omni,
sft``), each on its own manifest, carrying the weights and optimizer across. Every
``feedback_every`` steps the loss per concept of the recent draws goes to the engine
(:func:`engine.s3dit.service.report_feedback`: the workspace's ``feedback/``, or ``POST
/v1/feedback`` of a running service when ``ZCURATE_FEEDBACK_URL`` is set). The run's settings are
:class:`engine.s3dit.train_config.TrainConfig`; images from a checkpoint: ``engine.s3dit.sample``.

Exact resume: a run killed after any checkpoint and started again with the same config ends with
the same weights as an uninterrupted run (tested on CPU). Randomness is a function of (seed,
step), the sampler's state is in the checkpoint, and the data order does not depend on timing.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from engine.curation.manifest import ManifestError
from engine.s3dit.concept_loss import concept_losses
from engine.s3dit.conditioning import (
    PixelLatents,
    TextEncoder,
    TextEncoderConfig,
    VaeLatents,
    load_latents,
    pad_captions,
)
from engine.s3dit.data import ManifestLoader, read_manifest, refresh_weights, resolve_manifest
from engine.s3dit.flow import RectifiedFlow
from engine.s3dit.holdout import held_out_rows, training_rows
from engine.s3dit.model import Condition, S3DiT, build_model
from engine.s3dit.resolution import largest_bucket, scale_buckets
from engine.s3dit.run_log import Logger
from engine.s3dit.runtime import TorchThreads, pick_device
from engine.s3dit.service import report_feedback
from engine.s3dit.step_estimate import StepPlan, plan_step
from engine.s3dit.train_config import TrainConfig
from engine.s3dit.validation import ValidationSet, load_validation, validation_loss
from engine.vectors.embedder import encode_captions
from engine.workspace import Workspace

# --- helpers --------------------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at a stage's step: linear warm-up, then cosine (to min_lr_ratio) or constant."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def update_ema(ema: S3DiT, model: S3DiT, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)


def caption_features(encoder: TextEncoder, captions: list[str]) -> dict[str, torch.Tensor]:
    """Features of every distinct caption, encoded once (the text encoder is frozen).

    The distinct captions go to ``engine.vectors.embedder.encode_captions`` sorted, so the batches
    are the same on every run and a resumed run sees bit-identical features.
    """
    distinct = sorted(set(captions))
    return dict(zip(distinct, encode_captions(encoder.encode, distinct), strict=True))


def load_text_encoder(cfg: TrainConfig, device: str = "cpu") -> TextEncoder:
    layer = cfg.text_layer if cfg.text_layer is not None else (-1 if cfg.text_encoder is None else -2)
    return TextEncoder(TextEncoderConfig(cfg.text_encoder, layer), device)


def checkpoint_path(cfg: TrainConfig, name: str) -> str:
    return os.path.join(cfg.run_dir, "checkpoints", name)


def save_checkpoint(path: str, state: dict) -> None:
    """Atomic: a half-written checkpoint never replaces a whole one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


# --- the run ----------------------------------------------------------------------------------------

STEP_SEED_STRIDE = 1_000_003  # a prime past 1M steps: seed * stride + step differs for each (seed, step)


def new_summary() -> dict:
    return {"losses": {}, "feedback": [], "skipped": [], "refreshed": [], "validation": [], "plans": []}


@dataclass
class Run:
    """One run's objects and counters, handed from one part of :func:`main` to the next."""

    cfg: TrainConfig
    ws: Workspace
    device: torch.device
    encoder: TextEncoder  # frozen, on the CPU: caption features are computed once per manifest
    latents: PixelLatents | VaeLatents
    model: S3DiT
    ema: S3DiT  # exponential moving average of the model's weights (what sampling loads)
    opt: torch.optim.Optimizer
    flow: RectifiedFlow
    logger: Logger
    step: int = 0  # optimizer steps over all stages
    stage_index: int = 0  # the stage being trained, in cfg.stages
    stage_step: int = 0  # optimizer steps within that stage
    image_size: tuple[int, int] = (32, 32)  # (H, W) of the last batch; 32: the smallest bucket
    summary: dict = field(default_factory=new_summary)  # losses per stage, feedback and manifest paths
    validation: ValidationSet | None = None  # the held-out set of cfg.val_manifest

    @property
    def stage(self) -> str:
        return self.cfg.stages[self.stage_index]

    @property
    def grid(self) -> int:
        """Pixels per token side (latent factor x patch size): image sides are multiples of it."""
        return self.latents.factor * self.model.config.patch_size

    def result(self, stopped: bool = False) -> dict:
        """What :func:`main` returns."""
        result = {**self.summary, "checkpoint": checkpoint_path(self.cfg, "latest.pt"), "step": self.step}
        if stopped:
            result["stopped"] = True
        return result


@dataclass
class StageData:
    """One stage's data: its manifest's loader and caption features, and the draws since a report."""

    base: str  # the manifest the rows come from
    current: str  # the manifest the weights come from (a newer one is followed after a report)
    loader: ManifestLoader
    features: dict[str, torch.Tensor]  # caption -> (L, D) text features
    recent_concepts: list[list[int]] = field(default_factory=list)  # per draw since the last report
    recent_losses: list[float] = field(default_factory=list)  # per draw since the last report


def check_manifests(cfg: TrainConfig) -> None:
    """Every stage has a readable manifest: fail early, not after hours of the first stage."""
    for stage in cfg.stages:
        if stage not in cfg.manifests:
            raise ManifestError(f"no manifest given for stage {stage!r}")
    cfg.check()
    for stage in cfg.stages:
        read_manifest(resolve_manifest(cfg.manifests[stage]))


def setup_torch(cfg: TrainConfig) -> torch.device:
    """The run's device, with the global seed set (the model's initial weights)."""
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # tf32 matmuls: same loss curve, ~2x faster
        torch.backends.cudnn.allow_tf32 = True
    return device


def build_run(
    cfg: TrainConfig,
    ws: Workspace,
    device: torch.device,
    encoder: TextEncoder,
    latents: PixelLatents | VaeLatents,
) -> Run:
    """A fresh model, its EMA copy, AdamW and the flow objective (:func:`resume_run` loads a checkpoint)."""
    model = build_model(cfg.preset, latents.channels, encoder.dim).to(device)
    on_gpu = device.type == "cuda"
    model.gradient_checkpointing = on_gpu if cfg.grad_checkpointing is None else cfg.grad_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    flow = RectifiedFlow(model, encoder.encode([""])[0], cfg.cap_dropout, patch_size=model.config.patch_size)
    return Run(cfg, ws, device, encoder, latents, model, ema, opt, flow, Logger(cfg.run_dir, cfg.log))


def resume_run(run: Run) -> dict | None:
    """Load the run's latest checkpoint into ``run`` when there is one.

    Returns its data state, ``{"sampler", "manifest_files"}`` (both None when it was taken between
    stages), or None for a fresh run.
    """
    path = checkpoint_path(run.cfg, "latest.pt")
    if not os.path.exists(path):
        return None
    ckpt = torch.load(path, map_location=run.device, weights_only=False)
    run.model.load_state_dict(ckpt["model"])
    run.ema.load_state_dict(ckpt["ema"])
    run.opt.load_state_dict(ckpt["opt"])
    run.step, run.stage_index, run.stage_step = ckpt["step"], ckpt["stage_index"], ckpt["stage_step"]
    run.image_size = tuple(ckpt["image_size"])
    return {"sampler": ckpt["sampler"], "manifest_files": ckpt["manifest_files"]}


def load_stage_data(run: Run, resumed: dict | None) -> StageData:
    """The current stage's manifest, loader and caption features. ``resumed`` (a checkpoint taken
    mid-stage) restores the manifests followed and the sampler's position."""
    cfg = run.cfg
    files = resumed["manifest_files"] if resumed else None
    base, current = files or (resolve_manifest(cfg.manifests[run.stage]),) * 2
    table = scale_buckets(training_rows(read_manifest(base), cfg.val_fraction), cfg.resolution, run.grid)
    loader = ManifestLoader(table, cfg.batch_size, cfg.seed + run.stage_index, cfg.epoch_size, cfg.repeat_cap)
    features = caption_features(run.encoder, [c or "" for c in table["caption"].to_pylist()])
    if resumed and resumed["sampler"] is not None:
        loader.sampler.load_state_dict(resumed["sampler"])
    return StageData(base, current, loader, features)


def train_step(run: Run, data: StageData) -> dict:
    """One optimizer step on the stage's next batch; returns its log row."""
    cfg, device = run.cfg, run.device
    tic = time.perf_counter()
    batch = data.loader.next_batch()
    run.summary["skipped"].extend(batch.skipped)
    run.image_size = tuple(batch.images.shape[-2:])
    cap, cap_lens = pad_captions([data.features[c] for c in batch.captions])
    x1 = run.latents.encode(batch.images.to(device))  # (N, C, H, W)
    ref = None if batch.refs is None else run.latents.encode(batch.refs.to(device))
    cond = Condition(cap.to(device), cap_lens.to(device), ref)
    gen = torch.Generator(device).manual_seed(cfg.seed * STEP_SEED_STRIDE + run.step)  # randomness = f(step)
    for group in run.opt.param_groups:
        group["lr"] = lr_at(run.stage_step, cfg)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss, per_sample = run.flow.loss(x1, cond, gen)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.opt.step()
    update_ema(run.ema, run.model, min(cfg.ema_decay, (1 + run.step) / (10 + run.step)))
    run.step, run.stage_step = run.step + 1, run.stage_step + 1
    data.recent_concepts.extend(batch.concept_ids)
    data.recent_losses.extend(per_sample.cpu().tolist())
    return {
        "step": run.step,
        "stage": run.stage,
        "stage_step": run.stage_step,
        "loss": float(loss.detach()),
        "lr": run.opt.param_groups[0]["lr"],
        "grad_norm": float(grad_norm),
        "samples_per_s": len(batch.sample_ids) / (time.perf_counter() - tic),
        "skipped": len(batch.skipped),
    }


def send_report(run: Run, data: StageData) -> None:
    """Report the loss per concept of the draws since the last report, then follow the manifest the
    engine rebuilt from it (the loader takes its weights from the next epoch on)."""
    report = concept_losses(run.stage, run.step, data.current, data.recent_concepts, data.recent_losses)
    run.summary["feedback"].append(report_feedback(run.ws, report))
    followed = refresh_weights(data.loader, run.cfg.manifests[run.stage], data.current, run.ws)
    if followed != data.current:
        run.summary["refreshed"].append(followed)
        data.current = followed
    data.recent_concepts, data.recent_losses = [], []


def save_latest(run: Run, data: StageData | None) -> None:
    """Checkpoint ``latest.pt``: weights, optimizer, counters and the data's state (``data`` None:
    between stages, where the next stage starts with a fresh sampler)."""
    state = {
        "model": run.model.state_dict(),
        "ema": run.ema.state_dict(),
        "opt": run.opt.state_dict(),
        "cfg": asdict(run.cfg),
        "model_config": run.model.config.to_dict(),
        "latents": run.latents.config(),
        "text_encoder": {"path": run.cfg.text_encoder, "layer": run.encoder.config.layer},
        "image_size": list(run.image_size),
        "step": run.step,
        "stage_index": run.stage_index,
        "stage_step": run.stage_step,
        "sampler": None if data is None else data.loader.sampler.state_dict(),
        # the manifest the rows came from, and the one the weights came from (followed)
        "manifest_files": None if data is None else (data.base, data.current),
    }
    save_checkpoint(checkpoint_path(run.cfg, "latest.pt"), state)


def log_step(run: Run, row: dict, on_step: Callable[[dict], None] | None, bar) -> None:
    """A step's row to the log, the summary, the caller's ``on_step`` and the progress bar."""
    run.logger.write(row)
    run.summary["losses"].setdefault(row["stage"], []).append(row["loss"])
    if on_step is not None:
        on_step(row)
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}")


def load_validation_set(run: Run) -> ValidationSet | None:
    """The run's fixed validation set: ``--val-manifest``, or the ``--val-fraction`` slice held out
    of the stage manifests (engine.s3dit.holdout); buckets scaled to ``--resolution`` like training's."""
    cfg = run.cfg
    if cfg.val_manifest:
        table = read_manifest(cfg.val_manifest)
    elif cfg.val_fraction:
        stages = [read_manifest(resolve_manifest(cfg.manifests[s])) for s in cfg.stages]
        table = held_out_rows(stages, cfg.val_fraction)
    else:
        return None
    table = scale_buckets(table, cfg.resolution, run.grid)
    name = cfg.val_manifest or f"--val-fraction {cfg.val_fraction:g} of the stage manifests"
    return load_validation(table, run.encoder, run.latents, cfg.val_timesteps, name)


def log_validation(run: Run) -> dict:
    """Score the EMA weights (what sampling uses) on the validation set; a row to val.csv."""
    scores = validation_loss(run.ema, run.validation)
    row = {"step": run.step, "stage": run.stage, "stage_step": run.stage_step, **scores}
    run.logger.write_validation(row)
    run.summary["validation"].append(row)
    return row


def plan_stage(run: Run, data: StageData) -> StepPlan:
    """Before the stage's first step (of this process): tokens per image, the estimated seconds
    per step from a timed warm-up, and on a CPU the flag that makes a slow step fast
    (engine.s3dit.step_estimate; it changes nothing the run depends on)."""
    lengths = sorted(f.shape[0] for f in data.features.values())
    return plan_step(
        run.model,
        run.stage,
        run.cfg.preset,
        largest_bucket((r["bucket_h"], r["bucket_w"]) for r in data.loader.rows),
        run.cfg.batch_size,
        lengths[len(lengths) // 2],  # the median caption length
        run.latents.factor,
    )


def train_stage(
    run: Run, data: StageData, on_step: Callable[[dict], None] | None, stop_at: int | None
) -> bool:
    """The current stage's steps to its end (True), or to global step ``stop_at`` (False, checkpointed)."""
    cfg, bar = run.cfg, None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(
            total=cfg.steps, initial=run.stage_step, desc=f"train {run.stage}", unit="step", leave=False
        )
    run.model.train()
    validate = run.validation is not None
    if validate and run.stage_step == 0:
        log_validation(run)
    try:
        while run.stage_step < cfg.steps:
            log_step(run, train_step(run, data), on_step, bar)
            if validate and (run.stage_step % cfg.val_every == 0 or run.stage_step == cfg.steps):
                log_validation(run)
            if run.stage_step % cfg.feedback_every == 0 or run.stage_step == cfg.steps:
                send_report(run, data)
            if run.stage_step % cfg.checkpoint_every == 0 and run.stage_step < cfg.steps:
                save_latest(run, data)
            if run.step == stop_at and run.stage_step < cfg.steps:
                save_latest(run, data)
                return False
        return True
    finally:
        if bar is not None:
            bar.close()


def finish_stage(run: Run) -> None:
    """The stage's EMA weights to ``<stage>.pt``; the next stage starts from these weights."""
    save_checkpoint(
        checkpoint_path(run.cfg, f"{run.stage}.pt"), {"ema": run.ema.state_dict(), "step": run.step}
    )
    run.stage_index, run.stage_step = run.stage_index + 1, 0
    save_latest(run, None)


# --- main -------------------------------------------------------------------------------------------


def main(
    cfg: TrainConfig,
    on_step: Callable[[dict], None] | None = None,
    stop_at: int | None = None,
    on_plan: Callable[[StepPlan], None] | None = None,
) -> dict:
    """Train every stage of ``cfg``; resumes from the run's latest checkpoint when there is one.

    ``stop_at``: checkpoint and return after this global step (a time-limited job; the same call
    without it resumes). ``on_step`` receives each logged row, ``on_plan`` each stage's
    :class:`~engine.s3dit.step_estimate.StepPlan` before its first step (tokens per image, the
    estimated seconds per step, the flag that makes a slow CPU step fast).

    Returns a summary: final step, losses per stage, checkpoint, feedback and followed manifest
    paths, skipped draws, validation scores, step plans; ``stopped`` when it stopped at ``stop_at``.
    """
    # --- setup ------------------------------------------------------------------------------------
    check_manifests(cfg)
    ws = Workspace(cfg.workspace).create()
    with TorchThreads(cfg.threads):  # cfg.threads None: as the caller set torch (the CLI passes a number)
        device = setup_torch(cfg)
        encoder = load_text_encoder(cfg, "cpu")
        latents = load_latents(cfg.vae, str(device))
        # --- model / EMA (from the latest checkpoint when there is one) --------------------------------
        run = build_run(cfg, ws, device, encoder, latents)
        try:
            run.validation = load_validation_set(run)
            resumed = resume_run(run)
            while run.stage_index < len(cfg.stages):
                # --- data (from a manifest only) --------------------------------------------------------
                data = load_stage_data(run, resumed)
                resumed = None
                run.summary["plans"].append(asdict(plan := plan_stage(run, data)))
                if on_plan is not None:
                    on_plan(plan)
                # --- loop -----------------------------------------------------------------------------
                if not train_stage(run, data, on_step, stop_at):
                    return run.result(stopped=True)
                # --- checkpoint (stage end) ---------------------------------------------------------------
                finish_stage(run)
                if run.step == stop_at and run.stage_index < len(cfg.stages):
                    return run.result(stopped=True)
            return run.result()
        finally:
            run.logger.close()
