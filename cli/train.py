"""``zcurate train`` and ``sample``: the bundled S3-DiT trainer and sampler (``engine.s3dit``)."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cli.shared import WorkspaceOption, checked_device, fail, out
from engine.s3dit.train_config import TrainConfig
from engine.workspace import Workspace

app = typer.Typer()


def _stage_manifests(ws: Workspace, stages: list[str], given: list[str]) -> dict[str, str]:
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
            folder = Path(ws.path(ws.manifests, stage))
            if not any(folder.glob("*.parquet")):
                fail(
                    f"no manifest for stage {stage!r}: pass --manifest {stage}=PATH or build one in {folder}"
                )
            manifests[stage] = str(folder)  # the trainer takes the newest and follows new ones
    return manifests


# TrainConfig's fields that the command takes in a form of its own (above and below); every other
# field is an option of the same name, type and default, with the help text of its field.
OWN_FORMS = ("workspace", "stages", "manifests")


def config_options(config: type, skip: tuple[str, ...]) -> list[inspect.Parameter]:
    """One keyword-only typer option per field of the dataclass ``config`` (but ``skip``): the
    field's name (``batch_size`` -> ``--batch-size``), type and default, and ``metadata["help"]``."""
    hints = typing.get_type_hints(config)
    return [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=f.default,
            annotation=Annotated[hints[f.name], typer.Option(help=f.metadata.get("help", ""))],
        )
        for f in dataclasses.fields(config)
        if f.name not in skip
    ]


def with_options(options: list[inspect.Parameter]) -> Callable:
    """Decorate a command whose ``**`` parameter takes ``options``: typer sees the command's own
    parameters followed by ``options``, and passes those by name."""

    def decorate(command: Callable) -> Callable:
        own = inspect.signature(command, eval_str=True).parameters.values()
        params = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD] + options
        command.__signature__ = inspect.Signature(params, return_annotation=None)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def check_options(options: dict) -> None:
    """The one-line errors for option values TrainConfig cannot train with."""
    from engine.s3dit.model import S3DiT_models

    if options["preset"] not in S3DiT_models:
        fail(f"unknown preset {options['preset']!r}; choose one of {', '.join(S3DiT_models)}")
    if options["schedule"] not in ("cosine", "constant") or options["log"] not in ("csv", "tensorboard"):
        fail("--schedule is cosine or constant; --log is csv or tensorboard")
    positive = ("steps", "batch_size", "feedback_every", "checkpoint_every")
    if min(options[k] for k in positive) < 1 or options["warmup"] < 0 or options["lr"] <= 0:
        fail("--steps, --batch-size, --feedback-every, --checkpoint-every and --lr must be positive")
    checked_device(options["device"])


def run_threads(threads: int | None) -> int:
    """``--threads``, else the CPUs this process may use (engine.s3dit.runtime), or one line and exit 2."""
    from engine.s3dit.runtime import default_threads

    try:
        return default_threads(threads)
    except ValueError as e:
        fail(str(e))


def print_summary(summary: dict, feedback_dir: str) -> None:
    """What a finished (or stopped) run did, a few lines."""
    for stage, losses in summary["losses"].items():
        tail = losses[-min(len(losses), 50) :]
        out.print(
            f"{stage}: {len(losses)} steps, loss {losses[0]:.4f} -> {sum(tail) / len(tail):.4f} (last 50)"
        )
    if summary["skipped"]:
        out.print(f"skipped {len(summary['skipped'])} draws whose image could not be read")
    if summary.get("validation"):
        v = summary["validation"][-1]
        out.print(
            f"validation at step {v['step']}: loss {v['val_loss']:.4f}, with a wrong caption "
            f"{v['val_loss_wrong_caption']:.4f}, caption gap {v['val_gap']:+.4f} (val.csv)"
        )
    out.print(f"checkpoint: {summary['checkpoint']}")
    out.print(f"feedback:   {len(summary['feedback'])} reports in {feedback_dir}")
    for path in summary["refreshed"]:
        out.print(f"followed a newer manifest: {path}")


@app.command(
    epilog="Example: zcurate train --workspace ./ws --stages lowres --manifest lowres.parquet "
    "--preset S3DiT-T/4 --resolution 64 --steps 300 --batch-size 16"
)
@with_options(config_options(TrainConfig, OWN_FORMS))
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
    **options,  # TrainConfig's other fields by name (with_options lists each one for typer)
) -> None:
    """Train the bundled S3-DiT on the workspace's stage manifests, stage after stage.

    Checkpoints go to WS/train/RUN_NAME/checkpoints (latest.pt, STAGE.pt), the log to log.csv,
    per-concept loss reports to WS/feedback/STAGE/STEP.parquet. Run the same command again to
    resume a stopped run exactly.
    """
    from engine.curation.manifest import ManifestError
    from engine.s3dit.train import main

    stage_list = [s.strip() for s in stages.split(",") if s.strip()]
    if not stage_list:
        fail("--stages names no stage")
    check_options(options)
    ws = Workspace(workspace)
    if not ws.is_local:
        fail("training writes checkpoints with torch.save: use a local workspace directory")
    manifests = _stage_manifests(ws, stage_list, manifest or [])
    options["threads"] = run_threads(options["threads"])
    cfg = TrainConfig(workspace=ws.root, stages=stage_list, manifests=manifests, **options)
    try:
        cfg.check()
        summary = main(cfg, on_plan=lambda plan: [out.print(line) for line in plan.lines()])
    except (ManifestError, ValueError, OSError) as e:
        fail(str(e).splitlines()[0])
    print_summary(summary, ws.path(ws.feedback))


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
    resolution: Annotated[
        int | None,
        typer.Option(help="Scale the image so its longer side is this many pixels (as zcurate train's)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    threads: Annotated[
        int | None, typer.Option(help="Torch intra-op threads (default: the CPUs this process may use).")
    ] = None,
    raw: Annotated[bool, typer.Option(help="Use the raw weights instead of the EMA.")] = False,
) -> None:
    """Generate images from a trained checkpoint: one grid row per prompt."""
    from engine.s3dit.data import to_image
    from engine.s3dit.resolution import scale_size
    from engine.s3dit.runtime import TorchThreads
    from engine.s3dit.sample import load_for_sampling, sample_images

    if not checkpoint.is_file():
        fail(f"checkpoint {checkpoint} does not exist")
    if steps < 1 or per_prompt < 1 or (resolution is not None and resolution < 1):
        fail("--steps, --per-prompt and --resolution must be positive")
    with TorchThreads(run_threads(threads)):
        loaded = load_for_sampling(str(checkpoint), checked_device(device), use_ema=not raw)
        h, w = height or loaded["image_size"][0], width or loaded["image_size"][1]
        multiple = loaded["latents"].factor * loaded["model"].config.patch_size
        if resolution is not None:
            h, w = scale_size(h, w, resolution, multiple)
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
