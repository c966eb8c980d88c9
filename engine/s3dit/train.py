"""Train the bundled S3-DiT on manifests, stage by stage (DiT's ``train.py`` shape).

``main(cfg)`` runs setup, model/EMA, data (from a manifest only), the loop, and checkpoints
(``model, ema, opt, cfg, step`` plus the sampler state). Stages run in order (``lowres, omni,
sft``), each on its own manifest, carrying the weights and optimizer across. Every
``feedback_every`` steps the loss per concept of the recent draws goes to the engine
(:func:`engine.s3dit.concept_loss.send_feedback`, or ``POST /v1/feedback`` of a running service
when ``ZCURATE_FEEDBACK_URL`` is set: :func:`report_feedback`).

Exact resume: a run killed after any checkpoint and started again with the same config ends with
the same weights as an uninterrupted run (tested on CPU). Randomness is a function of (seed,
step), the sampler's state is in the checkpoint, and the data order does not depend on timing.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from engine.s3dit.concept_loss import concept_losses, send_feedback
from engine.s3dit.conditioning import TextEncoder, TextEncoderConfig, load_latents, pad_captions
from engine.s3dit.data import ManifestError, ManifestLoader, read_manifest
from engine.s3dit.flow import RectifiedFlow
from engine.s3dit.model import Condition, S3DiT, S3DiTConfig, build_model
from engine.workspace import Workspace


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint."""

    workspace: str
    stages: list[str]  # in training order, e.g. ["lowres", "omni", "sft"]
    manifests: dict[str, str]  # stage -> manifest Parquet, or a folder of them: newest, followed
    preset: str = "S3DiT-XS/2"
    steps: int = 1000  # optimizer steps per stage
    batch_size: int = 32
    lr: float = 3e-4  # small DiTs train stably at 1e-4..5e-4 with AdamW and warm-up
    min_lr_ratio: float = 0.1  # cosine ends at 10% of lr rather than 0, so late steps still learn
    schedule: str = "cosine"  # cosine | constant (both after the warm-up)
    warmup: int = 100  # linear warm-up steps: Adam's moment estimates settle in ~1/(1-beta2) steps
    weight_decay: float = 0.0  # DiT trains without weight decay
    betas: tuple[float, float] = (0.9, 0.95)  # beta2 0.95: steadier with large, noisy gradients
    grad_clip: float = 1.0  # clip the global gradient norm; guards early steps against spikes
    ema_decay: float = 0.999  # EMA half-life ~700 steps; warmed up as (1 + n) / (10 + n) early on
    cap_dropout: float = 0.1  # empty caption on 10% of draws, for classifier-free guidance
    seed: int = 0
    epoch_size: int | None = None  # draws per epoch (None: every positive-weight row)
    repeat_cap: int | None = None  # most draws of one manifest row within a stage
    text_encoder: str | None = None  # local HF model folder; None: the embedded MiniLM-L6
    text_layer: int | None = None  # hidden state used; None: -1 for MiniLM, -2 (penultimate) otherwise
    vae: str | None = None  # local diffusers AutoencoderKL folder; None: pixel space
    feedback_every: int = 100  # steps between concept-loss reports to the engine
    checkpoint_every: int = 500  # steps between checkpoints (one more at the end of each stage)
    log: str = "csv"  # csv | tensorboard
    device: str = "auto"  # auto: cuda when available
    grad_checkpointing: bool | None = None  # None: on for CUDA (memory), off on CPU (speed)
    run_name: str = "s3dit"
    progress: bool = True

    @property
    def run_dir(self) -> str:
        ws = Workspace(self.workspace)
        return ws.path(ws.train, self.run_name)


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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def encode_captions(encoder: TextEncoder, captions: list[str]) -> dict[str, torch.Tensor]:
    """Features of every distinct caption, encoded once (the text encoder is frozen).

    Sorted and chunked the same way on every run, so a resumed run sees bit-identical features.
    """
    todo, features = sorted(set(captions)), {}
    for i in range(0, len(todo), 64):  # 64 captions per encoder call bounds its memory
        chunk = todo[i : i + 64]
        features.update(zip(chunk, encoder.encode(chunk), strict=True))
    return features


def load_text_encoder(cfg: TrainConfig, device: str = "cpu") -> TextEncoder:
    layer = cfg.text_layer if cfg.text_layer is not None else (-1 if cfg.text_encoder is None else -2)
    return TextEncoder(TextEncoderConfig(cfg.text_encoder, layer), device)


def resolve_manifest(location: str) -> str:
    """A manifest file, or the newest ``*.parquet`` of a folder (the engine's manifests/<stage>)."""
    if not os.path.isdir(location):
        return location
    found = [os.path.join(location, n) for n in os.listdir(location) if n.endswith(".parquet")]
    if not found:
        raise ManifestError(f"no manifest (*.parquet) in {location}")
    return max(found, key=lambda p: (os.stat(p).st_mtime_ns, p))


def rebuild_manifest(ws: Workspace, current: str) -> str | None:
    """Ask the engine for the stage's manifest again, with the recipe and seed of the current one
    (from its sidecar, ``<id>.json``): the feedback just sent changes the manifest id, so this
    writes a new manifest next to the current one. None for a manifest without a sidecar."""
    sidecar_path = os.path.splitext(current)[0] + ".json"
    if not os.path.exists(sidecar_path):
        return None
    from engine.curation.manifest import build_manifest
    from engine.curation.recipe import parse_recipe

    with open(sidecar_path, encoding="utf-8") as f:
        sidecar = json.load(f)
    recipe = parse_recipe(sidecar["recipe"], sidecar.get("recipe_file") or sidecar_path)
    return build_manifest(ws, recipe, seed=sidecar["seed"], size=sidecar["size"]).path


def refresh_weights(loader: ManifestLoader, location: str, current: str, ws: Workspace | None = None) -> str:
    """After a feedback report: rebuild the engine's manifest (when ``current`` has a sidecar) and
    follow it, or follow a manifest folder where a newer manifest appeared; the loader takes the
    new weights for the rows it has, from the next epoch on. Returns the file now followed."""
    rebuilt = rebuild_manifest(ws, current) if ws is not None else None
    if rebuilt is None and not os.path.isdir(location):
        return current
    newest = rebuilt or resolve_manifest(location)
    if newest != current:
        table = read_manifest(newest)
        loader.set_weights_by_id(
            dict(zip(table["sample_id"].to_pylist(), table["weight"].to_pylist(), strict=True))
        )
    return newest


def checkpoint_path(cfg: TrainConfig, name: str) -> str:
    return os.path.join(cfg.run_dir, "checkpoints", name)


def save_checkpoint(path: str, state: dict) -> None:
    """Atomic: a half-written checkpoint never replaces a whole one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


class Logger:
    """One row per logged step to log.csv (or TensorBoard scalars)."""

    FIELDS = ("step", "stage", "stage_step", "loss", "lr", "grad_norm", "samples_per_s", "skipped")

    def __init__(self, cfg: TrainConfig):
        os.makedirs(cfg.run_dir, exist_ok=True)
        self.tb = None
        if cfg.log == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError(
                    "--log tensorboard needs the tensorboard package (pip install tensorboard)"
                ) from e
            self.tb = SummaryWriter(os.path.join(cfg.run_dir, "tensorboard"))
        path = os.path.join(cfg.run_dir, "log.csv")
        new = not os.path.exists(path)
        self.file = open(path, "a", newline="")  # noqa: SIM115 - closed in close()
        self.csv = csv.DictWriter(self.file, self.FIELDS)
        if new:
            self.csv.writeheader()

    def write(self, row: dict) -> None:
        self.csv.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "lr", "grad_norm", "samples_per_s"):
                self.tb.add_scalar(f"{row['stage']}/{key}", row[key], row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


# --- main -------------------------------------------------------------------------------------------


FEEDBACK_TIMEOUT_S = 30.0  # a report is a few kB; a service that takes longer is down, and training stops


def report_feedback(ws: Workspace, report) -> str:
    """Hand a concept-loss report to the engine; returns where it went (a workspace path).

    With ``ZCURATE_FEEDBACK_URL`` set (a service's base URL, e.g. ``http://curator:8000``) the
    report is POSTed to its ``/v1/feedback`` with ``ZCURATE_API_KEY`` as the Bearer key, for a
    trainer that cannot write the workspace; otherwise :func:`send_feedback` writes it. Rows
    whose loss is not finite (a diverged batch) carry no signal and are left out of the POST.
    """
    url = os.environ.get("ZCURATE_FEEDBACK_URL", "").rstrip("/")
    if not url:
        return send_feedback(ws, report)
    rows = report.to_pylist()
    losses = [
        {k: r[k] for k in ("concept_id", "samples", "loss_mean", "loss_std")}
        for r in rows
        if math.isfinite(r["loss_mean"]) and math.isfinite(r["loss_std"])
    ]
    body = {
        "stage": rows[0]["stage"],
        "step": rows[0]["step"],
        "manifest": rows[0]["manifest"],
        "losses": losses,
    }
    headers = {"Content-Type": "application/json"}
    if os.environ.get("ZCURATE_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['ZCURATE_API_KEY']}"
    request = urllib.request.Request(f"{url}/v1/feedback", json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=FEEDBACK_TIMEOUT_S) as response:
        return json.loads(response.read())["path"]


def main(cfg: TrainConfig, on_step: Callable[[dict], None] | None = None, stop_at: int | None = None) -> dict:
    """Train every stage of ``cfg``; resumes from the run's latest checkpoint when there is one.

    ``stop_at``: checkpoint and return after this global step (a time-limited job; the same call
    without it resumes). ``on_step`` receives each logged row.

    Returns a summary: final step, last loss per stage, checkpoint and feedback paths.
    """
    # --- setup ------------------------------------------------------------------------------------
    for stage in cfg.stages:
        if stage not in cfg.manifests:
            raise ManifestError(f"no manifest given for stage {stage!r}")
    for stage in cfg.stages:  # fail early on a bad manifest, not after hours of the first stage
        read_manifest(resolve_manifest(cfg.manifests[stage]))
    ws = Workspace(cfg.workspace).create()
    device = pick_device(cfg.device)
    on_gpu = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True  # tf32 matmuls: same loss curve, ~2x faster
        torch.backends.cudnn.allow_tf32 = True
    encoder = load_text_encoder(cfg, "cpu")
    latents = load_latents(cfg.vae, str(device))

    # --- model / EMA --------------------------------------------------------------------------------
    model = build_model(cfg.preset, latents.channels, encoder.dim).to(device)
    model.gradient_checkpointing = on_gpu if cfg.grad_checkpointing is None else cfg.grad_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    flow = RectifiedFlow(model, encoder.encode([""])[0], cfg.cap_dropout, patch_size=model.config.patch_size)
    step, stage_index, stage_step, sampler_state, sources = 0, 0, 0, None, None
    latest = checkpoint_path(cfg, "latest.pt")
    if os.path.exists(latest):
        ckpt = torch.load(latest, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        step, stage_index, stage_step = ckpt["step"], ckpt["stage_index"], ckpt["stage_step"]
        sampler_state, sources = ckpt["sampler"], ckpt["manifest_files"]
    logger = Logger(cfg)
    summary: dict = {"losses": {}, "feedback": [], "checkpoint": latest, "skipped": [], "refreshed": []}

    def checkpoint(loader: ManifestLoader | None) -> None:
        """loader None: between stages (the next stage starts with a fresh sampler)."""
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "opt": opt.state_dict(),
            "cfg": asdict(cfg),
            "model_config": model.config.to_dict(),
            "latents": latents.config(),
            "text_encoder": {"path": cfg.text_encoder, "layer": encoder.config.layer},
            "image_size": list(last_size),
            "step": step,
            "stage_index": stage_index,
            "stage_step": stage_step,
            "sampler": None if loader is None else loader.sampler.state_dict(),
            # the manifest the rows came from, and the one the weights came from (followed)
            "manifest_files": None if loader is None else (base, current),
        }
        save_checkpoint(latest, state)

    last_size = (32, 32)
    while stage_index < len(cfg.stages):
        stage = cfg.stages[stage_index]
        # --- data (from a manifest only) ------------------------------------------------------------
        base, current = sources or (resolve_manifest(cfg.manifests[stage]),) * 2
        sources = None
        table = read_manifest(base)
        loader = ManifestLoader(table, cfg.batch_size, cfg.seed + stage_index, cfg.epoch_size, cfg.repeat_cap)
        features = encode_captions(encoder, [c or "" for c in table["caption"].to_pylist()])
        if sampler_state is not None:
            loader.sampler.load_state_dict(sampler_state)
            sampler_state = None
        recent: tuple[list, list] = ([], [])  # concept ids and losses of draws since the last report
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=stage_step, desc=f"train {stage}", unit="step", leave=False)

        # --- loop -------------------------------------------------------------------------------------
        model.train()
        while stage_step < cfg.steps:
            tic = time.perf_counter()
            batch = loader.next_batch()
            summary["skipped"].extend(batch.skipped)
            last_size = tuple(batch.images.shape[-2:])
            cap, cap_lens = pad_captions([features[c] for c in batch.captions])
            x1 = latents.encode(batch.images.to(device))  # (N, C, H, W)
            ref = None if batch.refs is None else latents.encode(batch.refs.to(device))
            cond = Condition(cap.to(device), cap_lens.to(device), ref)
            gen = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + step)  # randomness = f(step)
            for group in opt.param_groups:
                group["lr"] = lr_at(stage_step, cfg)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                loss, per_sample = flow.loss(x1, cond, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            update_ema(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
            step, stage_step = step + 1, stage_step + 1
            recent[0].extend(batch.concept_ids)
            recent[1].extend(per_sample.cpu().tolist())
            row = {
                "step": step,
                "stage": stage,
                "stage_step": stage_step,
                "loss": float(loss.detach()),
                "lr": opt.param_groups[0]["lr"],
                "grad_norm": float(grad_norm),
                "samples_per_s": len(batch.sample_ids) / (time.perf_counter() - tic),
                "skipped": len(batch.skipped),
            }
            logger.write(row)
            summary["losses"].setdefault(stage, []).append(row["loss"])
            if on_step is not None:
                on_step(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
            if stage_step % cfg.feedback_every == 0 or stage_step == cfg.steps:
                report = concept_losses(stage, step, current, *recent)
                summary["feedback"].append(report_feedback(ws, report))
                followed = refresh_weights(loader, cfg.manifests[stage], current, ws)
                if followed != current:
                    summary["refreshed"].append(followed)
                    current = followed
                recent = ([], [])
            if stage_step % cfg.checkpoint_every == 0 and stage_step < cfg.steps:
                checkpoint(loader)
            if step == stop_at and stage_step < cfg.steps:
                checkpoint(loader)
                logger.close()
                return {**summary, "step": step, "stopped": True}
        if bar is not None:
            bar.close()
        # --- checkpoint (stage end: the next stage starts from these weights) ------------------------
        save_checkpoint(checkpoint_path(cfg, f"{stage}.pt"), {"ema": ema.state_dict(), "step": step})
        stage_index, stage_step = stage_index + 1, 0
        checkpoint(None)
        if step == stop_at and stage_index < len(cfg.stages):
            logger.close()
            return {**summary, "step": step, "stopped": True}
    logger.close()
    summary["step"] = step
    return summary


# --- sampling ----------------------------------------------------------------------------------------


def load_for_sampling(path: str, device: str = "cpu", use_ema: bool = True) -> dict:
    """A trained checkpoint's model (EMA weights by default), text encoder, latents and flow."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model = S3DiT(
        S3DiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["model_config"].items()})
    )
    model.load_state_dict(ckpt["ema" if use_ema else "model"])
    model = model.to(device).eval()
    text = ckpt["text_encoder"]
    encoder = TextEncoder(TextEncoderConfig(text["path"], text["layer"]), "cpu")
    latents = load_latents(ckpt["latents"].get("path"), device)
    flow = RectifiedFlow(model, encoder.encode([""])[0], patch_size=model.config.patch_size)
    return {
        "model": model,
        "encoder": encoder,
        "latents": latents,
        "flow": flow,
        "image_size": ckpt["image_size"],
    }


@torch.no_grad()
def sample_images(
    loaded: dict, prompts: list[str], steps: int, cfg: float, seed: int, height: int, width: int
) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] for the prompts; same seed, same images."""
    latents, flow, device = loaded["latents"], loaded["flow"], next(loaded["model"].parameters()).device
    cap, cap_lens = pad_captions(loaded["encoder"].encode(prompts))
    shape = (len(prompts), latents.channels, height // latents.factor, width // latents.factor)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
    x = flow.sample(noise, Condition(cap.to(device), cap_lens.to(device)), steps, cfg)
    return latents.decode(x).cpu()
