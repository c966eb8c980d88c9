"""What a training step will cost, measured before the first one: tokens, seconds, a cheaper flag.

Before each stage the trainer times a short warm-up of the model on random inputs of the stage's
largest bucket (forward and backward, as training runs them: same autocast, same gradient
checkpointing) and reports the image tokens per image and the estimated seconds per step. On a
CPU it also times the step on one thread when it runs on several: on cores shared with other jobs
several OpenMP threads can be slower than one (``bench/results-threads-cpu.json``), and then
``--threads 1`` is advised. Where a CPU step would take more than :data:`STEP_BUDGET_S`, the
advice adds the ``--resolution`` (and, if that is not enough, ``--batch-size``) that brings it
under, itself timed. The warm-up changes nothing a run depends on: no optimizer step, its
gradients dropped, its inputs from a private generator, so a run with it is bit-identical to one
without.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from engine.s3dit.model import Condition, S3DiT
from engine.s3dit.resolution import scale_size, smaller_resolutions, tokens_per_image
from engine.s3dit.runtime import TorchThreads

# "A few seconds": at 5 s a step, the few hundred steps a first CPU run needs take minutes.
STEP_BUDGET_S = 5.0
# A step projected under this from one image is timed again at its whole batch (cheap, and a
# single image underuses a CPU's matmuls, so the projection overestimates small steps).
FULL_BATCH_TIMING_S = 2.0
TIMED_PASSES = 2  # the fastest of two: a pass that another job interrupted is not the estimate
ONE_THREAD_MARGIN = 0.8  # advise --threads 1 only when it is at least 20% faster (timing noise)
WARMUP_SEED = 0  # the warm-up's random inputs come from a private generator: the run's RNG is untouched


@dataclass
class StepPlan:
    """What :func:`plan_step` measured for one stage (the trainer's pre-flight report)."""

    stage: str
    preset: str
    bucket: tuple[int, int]  # (H, W) of the stage's largest bucket, after --resolution
    tokens: int  # image tokens per image at that bucket
    batch_size: int
    seconds: float  # estimated seconds per step: forward + backward (data loading not included)
    device: str
    threads: int  # torch's intra-op threads
    budget: float = STEP_BUDGET_S  # seconds a CPU step may take before the report advises
    one_thread_seconds: float | None = None  # a CPU step on one thread (timed when threads > 1)
    advice: str | None = None  # the flags that make a CPU step faster (--threads 1) or fit the budget
    advice_seconds: float | None = None  # the step's time with the advice, measured
    advice_tokens: int | None = None  # tokens per image with the advice

    def lines(self) -> list[str]:
        """The report, a few lines for a terminal."""
        h, w = self.bucket
        out = [
            f"{self.stage}: {w}x{h} images, {self.tokens:,} tokens per image ({self.preset}), "
            f"batch {self.batch_size}",
            f"{self.stage}: ~{self.seconds:.2f} s per step on {self.device} with {self.threads} torch "
            f"thread{'s' * (self.threads != 1)} (timed warm-up; image decoding not included)",
        ]
        if self.advice:
            why = (
                f"a step over {self.budget:g} s on a CPU"
                if self.seconds > self.budget
                else f"one thread is faster than {self.threads} here (other jobs on these cores?)"
            )
            out.append(
                f"{self.stage}: {why}: {self.advice} brings it to ~{self.advice_seconds:.2f} s per step "
                f"({self.advice_tokens:,} tokens per image)"
            )
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pass(model: S3DiT, size: tuple[int, int], batch: int, cap_tokens: int) -> float:
    """Seconds of one forward + backward of ``model`` on ``batch`` random latents of ``size``
    (latent pixels) with captions of ``cap_tokens`` tokens; the gradients are dropped after it."""
    device, cfg = next(model.parameters()).device, model.config
    g = torch.Generator().manual_seed(WARMUP_SEED)
    x = torch.randn(batch, cfg.in_channels, *size, generator=g).to(device)  # (N, C, h, w)
    t = torch.rand(batch, generator=g).to(device)  # (N,)
    cap = torch.randn(batch, cap_tokens, cfg.cap_feat_dim, generator=g).to(device)  # (N, L, D)
    cond = Condition(cap, torch.full((batch,), cap_tokens, dtype=torch.long, device=device))
    sync(device)
    tic = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        pred = model(x, t, cond)  # (N, C, h, w)
    pred.float().square().mean().backward()
    sync(device)
    seconds = time.perf_counter() - tic
    model.zero_grad(set_to_none=True)
    return seconds


def fastest_pass(model: S3DiT, size: tuple[int, int], batch: int, cap_tokens: int) -> float:
    """The fastest of TIMED_PASSES timed passes."""
    return min(time_pass(model, size, batch, cap_tokens) for _ in range(TIMED_PASSES))


def step_seconds(model: S3DiT, size: tuple[int, int], batch_size: int, cap_tokens: int) -> float:
    """Estimated seconds of a step of ``batch_size`` at latent ``size``: one untimed pass (first-call
    costs), then timed ones. On a CPU one image is timed and scaled by the batch (a whole batch of
    a large image would take as long as a step), unless that projects under FULL_BATCH_TIMING_S."""
    on_gpu = next(model.parameters()).device.type == "cuda"
    batch = batch_size if on_gpu else 1
    time_pass(model, size, batch, cap_tokens)
    seconds = fastest_pass(model, size, batch, cap_tokens) * batch_size / batch
    if not on_gpu and batch_size > 1 and seconds <= FULL_BATCH_TIMING_S:
        seconds = fastest_pass(model, size, batch_size, cap_tokens)
    return seconds


def cheaper_flags(
    model: S3DiT,
    bucket: tuple[int, int],
    batch_size: int,
    seconds: float,
    cap_tokens: int,
    factor: int,
    budget: float = STEP_BUDGET_S,
) -> tuple[str, float, int]:
    """The largest ``--resolution`` (then, if needed, the largest ``--batch-size``) whose step is
    timed under ``budget``: (flags, seconds with them, tokens per image)."""
    patch = model.config.patch_size
    multiple = patch * factor
    tokens = tokens_per_image(*bucket, patch, factor)
    candidates = smaller_resolutions(max(bucket), multiple) or [max(bucket)]
    for resolution in candidates:
        h, w = scale_size(*bucket, resolution, multiple)
        small = tokens_per_image(h, w, patch, factor)
        # a step's cost falls at most with the square of the tokens (attention's share; the rest
        # falls slower): a size over the budget even so cannot fit, the others are timed
        if seconds * (small / tokens) ** 2 > budget:
            continue
        measured = step_seconds(model, (h // factor, w // factor), batch_size, cap_tokens)
        if measured <= budget:
            return f"--resolution {resolution}", measured, small
        seconds, tokens = measured, small  # a better reference point for the next candidate
    resolution = candidates[-1]
    h, w = scale_size(*bucket, resolution, multiple)
    per_image = step_seconds(model, (h // factor, w // factor), 1, cap_tokens)
    batch = max(1, min(batch_size, int(budget / per_image)))
    flags = f"--resolution {resolution} --batch-size {batch}"
    return flags, per_image * batch, tokens_per_image(h, w, patch, factor)


def plan_step(
    model: S3DiT,
    stage: str,
    preset: str,
    bucket: tuple[int, int],
    batch_size: int,
    cap_tokens: int,
    factor: int,
    budget: float = STEP_BUDGET_S,
) -> StepPlan:
    """Time the stage's step at its largest ``bucket`` (pixels) with captions of ``cap_tokens``
    tokens (``factor``: the latents' downsampling, 1 for pixels); on a CPU, advise ``--threads 1``
    where it is faster and the flags that bring a step over ``budget`` seconds under it."""
    device = next(model.parameters()).device
    patch = model.config.patch_size
    size = (bucket[0] // factor, bucket[1] // factor)
    seconds = step_seconds(model, size, batch_size, cap_tokens)
    plan = StepPlan(
        stage,
        preset,
        bucket,
        tokens_per_image(*bucket, patch, factor),
        batch_size,
        seconds,
        str(device),
        torch.get_num_threads(),
        budget,
    )
    if device.type != "cpu":
        return plan
    best, one_thread = seconds, False
    if plan.threads > 1:
        with TorchThreads(1):
            plan.one_thread_seconds = step_seconds(model, size, batch_size, cap_tokens)
        one_thread = plan.one_thread_seconds < ONE_THREAD_MARGIN * seconds
        best = plan.one_thread_seconds if one_thread else seconds
    threads_flag = "--threads 1 " if one_thread else ""
    if best > budget:
        with TorchThreads(1 if one_thread else None):
            flags, advised, tokens = cheaper_flags(
                model, bucket, batch_size, best, cap_tokens, factor, budget
            )
        plan.advice, plan.advice_seconds, plan.advice_tokens = threads_flag + flags, advised, tokens
    elif one_thread:
        plan.advice, plan.advice_seconds, plan.advice_tokens = "--threads 1", best, plan.tokens
    return plan
