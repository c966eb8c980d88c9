"""``zcurate train`` and ``sample``: the bundled S3-DiT trainer and sampler (``engine.s3dit``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.shared import WorkspaceOption, fail, out

app = typer.Typer()


def _stage_manifests(ws_root: str, stages: list[str], given: list[str]) -> dict[str, str]:
    """stage -> manifest: 'stage=PATH' pairs, a bare PATH for a single stage, else the workspace's
    manifests/<stage> folder (a PATH may be a folder too: its newest manifest, followed)."""
    manifests: dict[str, str] = {}
    for item in given:
        stage, sep, path = item.partition("=")
        if not sep:
            if len(stages) != 1:
                fail(f"--manifest {item}: with several stages write STAGE=PATH")
            stage, path = stages[0], item
        if stage not in stages:
            fail(f"--manifest {item}: {stage!r} is not one of --stages {','.join(stages)}")
        manifests[stage] = path
    for stage in stages:
        if stage not in manifests:
            folder = Path(ws_root) / "manifests" / stage
            if not any(folder.glob("*.parquet")):
                fail(
                    f"no manifest for stage {stage!r}: pass --manifest {stage}=PATH or build one in {folder}"
                )
            manifests[stage] = str(folder)  # the trainer takes the newest and follows new ones
    return manifests


@app.command(
    epilog="Example: zcurate train --workspace ./ws --stages lowres --manifest lowres.parquet "
    "--preset S3DiT-T/4 --steps 300 --batch-size 16"
)
def train(
    workspace: WorkspaceOption,
    stages: Annotated[str, typer.Option(help="Stages in training order, comma-separated.")] = "lowres",
    manifest: Annotated[
        list[str] | None,
        typer.Option(
            help="STAGE=PATH (repeat per stage), or PATH for one stage. "
            "Default: the newest in WS/manifests/STAGE."
        ),
    ] = None,
    preset: Annotated[str, typer.Option(help="Model preset (S3DiT-T/4 ... S3DiT-6B/2).")] = "S3DiT-XS/2",
    steps: Annotated[int, typer.Option(help="Optimizer steps per stage.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Samples per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    schedule: Annotated[str, typer.Option(help="cosine or constant (after warm-up).")] = "cosine",
    warmup: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the sampling order, noise and timesteps.")] = 0,
    epoch_size: Annotated[int | None, typer.Option(help="Draws per epoch (default: every row).")] = None,
    repeat_cap: Annotated[int | None, typer.Option(help="Most draws of one row per stage.")] = None,
    text_encoder: Annotated[
        str | None, typer.Option(help="Local HF model folder (default: the embedded MiniLM-L6).")
    ] = None,
    text_layer: Annotated[
        int | None, typer.Option(help="Hidden-state index (default -1 MiniLM, -2 other).")
    ] = None,
    vae: Annotated[
        str | None, typer.Option(help="Local diffusers AutoencoderKL folder (default: pixels).")
    ] = None,
    feedback_every: Annotated[int, typer.Option(help="Steps between per-concept loss reports.")] = 100,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 500,
    log: Annotated[str, typer.Option(help="csv or tensorboard.")] = "csv",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    run_name: Annotated[str, typer.Option(help="Run folder: WS/train/RUN_NAME.")] = "s3dit",
) -> None:
    """Train the bundled S3-DiT on the workspace's stage manifests, stage after stage.

    Checkpoints go to WS/train/RUN_NAME/checkpoints (latest.pt, STAGE.pt), the log to log.csv,
    per-concept loss reports to WS/feedback/STAGE/STEP.parquet. Run the same command again to
    resume a stopped run exactly.
    """
    from engine.s3dit.data import ManifestError
    from engine.s3dit.model import S3DiT_models
    from engine.s3dit.train import TrainConfig, main
    from engine.workspace import Workspace

    stage_list = [s.strip() for s in stages.split(",") if s.strip()]
    if not stage_list:
        fail("--stages names no stage")
    if preset not in S3DiT_models:
        fail(f"unknown preset {preset!r}; choose one of {', '.join(S3DiT_models)}")
    if schedule not in ("cosine", "constant") or log not in ("csv", "tensorboard"):
        fail("--schedule is cosine or constant; --log is csv or tensorboard")
    if min(steps, batch_size, feedback_every, checkpoint_every) < 1 or warmup < 0 or lr <= 0:
        fail("--steps, --batch-size, --feedback-every, --checkpoint-every and --lr must be positive")
    ws = Workspace(workspace)
    if not ws.is_local:
        fail("training writes checkpoints with torch.save: use a local workspace directory")
    cfg = TrainConfig(
        workspace=ws.root,
        stages=stage_list,
        manifests=_stage_manifests(ws.root, stage_list, manifest or []),
        preset=preset,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        warmup=warmup,
        seed=seed,
        epoch_size=epoch_size,
        repeat_cap=repeat_cap,
        text_encoder=text_encoder,
        text_layer=text_layer,
        vae=vae,
        feedback_every=feedback_every,
        checkpoint_every=checkpoint_every,
        log=log,
        device=device,
        run_name=run_name,
    )
    try:
        summary = main(cfg)
    except (ManifestError, ValueError, OSError) as e:
        fail(str(e).splitlines()[0])
    for stage, losses in summary["losses"].items():
        tail = losses[-min(len(losses), 50) :]
        out.print(
            f"{stage}: {len(losses)} steps, loss {losses[0]:.4f} -> {sum(tail) / len(tail):.4f} (last 50)"
        )
    if summary["skipped"]:
        out.print(f"skipped {len(summary['skipped'])} draws whose image could not be read")
    out.print(f"checkpoint: {summary['checkpoint']}")
    out.print(f"feedback:   {len(summary['feedback'])} reports in {ws.path('feedback')}")
    for path in summary["refreshed"]:
        out.print(f"followed a newer manifest: {path}")


@app.command(
    epilog='Example: zcurate sample --checkpoint ws/train/s3dit/checkpoints/latest.pt --prompt "a red car" '
    "--steps 8 --cfg 4 --seed 0 --out grid.png"
)
def sample(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by zcurate train.")],
    prompt: Annotated[list[str], typer.Option(help="A prompt (repeat for several).")],
    out_path: Annotated[Path, typer.Option("--out", help="PNG grid to write.")] = Path("grid.png"),
    steps: Annotated[int, typer.Option(help="Euler steps.")] = 8,
    cfg: Annotated[float, typer.Option(help="Guidance scale (0: none).")] = 4.0,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    per_prompt: Annotated[int, typer.Option(help="Images per prompt (a grid row each).")] = 4,
    height: Annotated[int | None, typer.Option(help="Image height (default: the training bucket).")] = None,
    width: Annotated[int | None, typer.Option(help="Image width (default: the training bucket).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    raw: Annotated[bool, typer.Option(help="Use the raw weights instead of the EMA.")] = False,
) -> None:
    """Generate images from a trained checkpoint: one grid row per prompt."""
    from engine.s3dit.data import to_image
    from engine.s3dit.train import load_for_sampling, pick_device, sample_images

    if not checkpoint.is_file():
        fail(f"checkpoint {checkpoint} does not exist")
    if steps < 1 or per_prompt < 1:
        fail("--steps and --per-prompt must be positive")
    loaded = load_for_sampling(str(checkpoint), str(pick_device(device)), use_ema=not raw)
    h, w = height or loaded["image_size"][0], width or loaded["image_size"][1]
    multiple = loaded["latents"].factor * loaded["model"].config.patch_size
    if h % multiple or w % multiple:
        fail(f"--height and --width must be multiples of {multiple}")
    prompts = [p for p in prompt for _ in range(per_prompt)]
    images = sample_images(loaded, prompts, steps, cfg, seed, h, w)  # (N, 3, H, W)
    grid = (
        images.reshape(len(prompt), per_prompt, 3, h, w)
        .permute(2, 0, 3, 1, 4)
        .reshape(3, len(prompt) * h, -1)
    )
    to_image(grid).save(out_path)
    out.print(f"wrote {out_path} ({len(prompt)} x {per_prompt} images of {w}x{h}, {steps} steps, cfg {cfg})")
