"""What a training run depends on: :class:`TrainConfig`, saved in every checkpoint.

Each field with a default carries its ``zcurate train --help`` text (``field(metadata={"help":
...})`` through :func:`option`); the command derives its options from these fields, so a new field
is a new option without a second edit. The comment beside a field says why its default has its
value. No torch here: the command line imports this module on every start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.workspace import Workspace


def option(default, help_text: str):
    """A field with a default and the one line that ``zcurate train --help`` shows for it."""
    return field(default=default, metadata={"help": help_text})


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint."""

    workspace: str
    stages: list[str]  # in training order, e.g. ["lowres", "omni", "sft"]
    manifests: dict[str, str]  # stage -> manifest Parquet, or a folder of them: newest, followed
    preset: str = option("S3DiT-XS/2", "Model preset (S3DiT-T/4 ... S3DiT-6B/2).")
    # None: the manifest's buckets as they are; Z-Image's first stage trains at a fraction of the
    # final size, and a CPU run needs ~64 px to take seconds rather than tens of seconds a step
    resolution: int | None = option(
        None, "Train every bucket scaled so its longer side is this many pixels (aspect kept)."
    )
    steps: int = option(1000, "Optimizer steps per stage.")
    batch_size: int = option(32, "Samples per step.")
    # small DiTs train stably at 1e-4..5e-4 with AdamW and warm-up
    lr: float = option(3e-4, "Peak learning rate.")
    # cosine ends at 10% of lr rather than 0, so late steps still learn
    min_lr_ratio: float = option(0.1, "Final learning rate of the cosine, as a fraction of --lr.")
    schedule: str = option("cosine", "cosine or constant (after warm-up).")
    # Adam's moment estimates settle in ~1/(1-beta2) steps
    warmup: int = option(100, "Linear warm-up steps.")
    weight_decay: float = option(0.0, "AdamW weight decay.")  # DiT trains without weight decay
    # beta2 0.95: steadier with large, noisy gradients
    betas: tuple[float, float] = option((0.9, 0.95), "AdamW betas.")
    # clip the global gradient norm; guards early steps against spikes
    grad_clip: float = option(1.0, "Largest global gradient norm (clipped above it).")
    # EMA half-life ~700 steps; warmed up as (1 + n) / (10 + n) early on
    ema_decay: float = option(0.999, "Decay of the EMA weights.")
    # empty caption on 10% of draws, for classifier-free guidance
    cap_dropout: float = option(0.1, "Share of draws trained with an empty caption (for guidance).")
    seed: int = option(0, "Seed of the sampling order, noise and timesteps.")
    epoch_size: int | None = option(None, "Draws per epoch (default: every row).")
    repeat_cap: int | None = option(None, "Most draws of one row per stage.")
    text_encoder: str | None = option(None, "Local HF model folder (default: the embedded MiniLM-L6).")
    text_layer: int | None = option(None, "Hidden-state index (default -1 MiniLM, -2 other).")
    vae: str | None = option(None, "Local diffusers AutoencoderKL folder (default: pixels).")
    feedback_every: int = option(100, "Steps between per-concept loss reports.")
    # one more checkpoint at the end of each stage
    checkpoint_every: int = option(500, "Steps between checkpoints.")
    log: str = option("csv", "csv or tensorboard.")
    device: str = option("auto", "auto, cpu, cuda, cuda:1 ... (auto: cuda when available).")
    # None in a TrainConfig: torch as the caller set it; zcurate train passes the CPUs the process
    # may use (engine.s3dit.runtime; bench/bench_threads.py measures the choice)
    threads: int | None = option(
        None, "Torch intra-op threads (default: the CPUs this process may use, os.sched_getaffinity)."
    )
    # None: on for CUDA (memory), off on CPU (speed)
    grad_checkpointing: bool | None = option(
        None, "Recompute activations in the backward pass (default: on for CUDA, off on CPU)."
    )
    # a fixed held-out set scored at fixed timesteps and noise (engine.s3dit.validation)
    val_manifest: str | None = option(None, "Validation manifest: held-out loss and caption gap in val.csv.")
    # a slice of the stage manifests by sample_id hash (engine.s3dit.holdout), never trained on
    val_fraction: float | None = option(
        None, "Hold out this share of the stage manifests (by sample_id) as the validation set."
    )
    val_every: int = option(100, "Steps between validation scores (and one before the first step).")
    val_timesteps: int = option(5, "Noise levels of the validation loss, evenly spaced.")
    run_name: str = option("s3dit", "Run folder: WS/train/RUN_NAME.")
    progress: bool = option(True, "Show a progress bar per stage.")

    def check(self) -> None:
        """The settings a run cannot start with, as one-line ValueErrors."""
        if self.val_manifest and self.val_fraction:
            raise ValueError("give --val-manifest or --val-fraction, not both")
        if self.val_fraction is not None and not 0 <= self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), not {self.val_fraction}")
        if (self.val_manifest or self.val_fraction) and (self.val_every < 1 or self.val_timesteps < 1):
            raise ValueError("--val-every and --val-timesteps must be at least 1")
        if self.resolution is not None and self.resolution < 1:
            raise ValueError(f"--resolution must be positive, not {self.resolution}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, not {self.threads}")

    @property
    def run_dir(self) -> str:
        ws = Workspace(self.workspace)
        return ws.path(ws.train, self.run_name)
