"""Training throughput of the bundled S3-DiT against diffusers' ZImageTransformer2DModel.

Both models are built at the same configuration with the same weights (copied across), get the
same batch (ragged caption lengths), and run the same training step: forward, flow-matching MSE,
backward, AdamW. Rounds alternate between the two so that load from other processes on a shared
machine hits both alike; the reported rate is the median over rounds. On CUDA the step runs
under bf16 autocast and model FLOPs utilisation (MFU) is reported: FLOPs of one step counted by
torch's FlopCounterMode (matmuls and attention, forward + backward) / step time / peak bf16.

Run by hand:

    PYTHONPATH=. .venv/bin/python bench/bench_s3dit.py --json bench/results-s3dit-cpu.json
    PYTHONPATH=. python bench/bench_s3dit.py --device cuda --presets S3DiT-T/2,S3DiT-XS/2,S3DiT-B/2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from engine.s3dit.diffusers_weights import convert_diffusers_state_dict
from engine.s3dit.model import S3DiT, S3DiT_models

# Dense bf16 peak of the cards we may get (NVIDIA data sheets, SXM parts, no sparsity).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def diffusers_model(cfg):
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel(
        all_patch_size=(cfg.patch_size,),
        all_f_patch_size=(1,),
        in_channels=cfg.in_channels,
        dim=cfg.dim,
        n_layers=cfg.n_layers,
        n_refiner_layers=cfg.n_refiner_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_heads,
        cap_feat_dim=cfg.cap_feat_dim,
        axes_dims=list(cfg.axes_dims),
        axes_lens=list(cfg.axes_lens),
    )


def make_batch(cfg, batch: int, size: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(6, 48, (batch,), generator=g)  # caption tokens, ragged like MiniLM captions
    cap = torch.randn(batch, int(lens.max()), cfg.cap_feat_dim, generator=g)
    for i, n in enumerate(lens.tolist()):
        cap[i, n:] = 0
    x1 = torch.randn(batch, cfg.in_channels, size, size, generator=g)
    x0 = torch.randn(batch, cfg.in_channels, size, size, generator=g)
    t = torch.rand(batch, generator=g)
    return [v.to(device) for v in (x1, x0, t, cap, lens)]


def step_ours(model, opt, batch, autocast: bool):
    from engine.s3dit.model import Condition

    x1, x0, t, cap, lens = batch
    tb = t[:, None, None, None]
    with torch.autocast(x1.device.type, torch.bfloat16, enabled=autocast):
        pred = model(tb * x1 + (1 - tb) * x0, t, Condition(cap, lens))
        loss = (pred.float() - (x1 - x0)).square().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_diffusers(model, opt, batch, autocast: bool):
    x1, x0, t, cap, lens = batch
    tb = t[:, None, None, None]
    xt = tb * x1 + (1 - tb) * x0
    with torch.autocast(x1.device.type, torch.bfloat16, enabled=autocast):
        out = model(
            [x[:, None] for x in xt], t, [cap[i, :n] for i, n in enumerate(lens.tolist())], return_dict=False
        )[0]
        pred = torch.stack([o[:, 0] for o in out])
        loss = (pred.float() - (x1 - x0)).square().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_flops(fn, *args) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args)
    return counter.get_total_flops()


def bench_preset(
    name: str, batch: int, size: int, device, rounds: int, steps: int, checkpointing: bool
) -> dict:
    cfg = S3DiT_models[name]
    if device.type == "cpu":
        cfg = type(cfg)(**{**cfg.to_dict(), "in_channels": 3, "cap_feat_dim": 384})  # pixel space, MiniLM
    torch.manual_seed(0)
    theirs = diffusers_model(cfg).to(device)
    ours = S3DiT(cfg)
    ours.load_state_dict(convert_diffusers_state_dict(theirs.state_dict()))
    ours = ours.to(device)
    if checkpointing:
        ours.gradient_checkpointing = True
        theirs.enable_gradient_checkpointing()
    autocast = device.type == "cuda"
    data = make_batch(cfg, batch, size, device)
    runs = {
        "ours": (ours, torch.optim.AdamW(ours.parameters(), lr=1e-4), step_ours),
        "diffusers": (theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-4), step_diffusers),
    }
    for model, opt, fn in runs.values():  # warm-up: allocator, kernels, optimizer state
        for _ in range(2):
            fn(model, opt, data, autocast)
    sync(device)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for key, (model, opt, fn) in runs.items():
            tic = time.perf_counter()
            for _ in range(steps):
                fn(model, opt, data, autocast)
            sync(device)
            rates[key].append(batch * steps / (time.perf_counter() - tic))
    result = {
        "preset": name,
        "params": sum(p.numel() for p in ours.parameters()),
        "batch": batch,
        "image": f"{cfg.in_channels}x{size}x{size}",
        "tokens_per_image": (size // cfg.patch_size) ** 2,
        "ours_samples_per_s": statistics.median(rates["ours"]),
        "diffusers_samples_per_s": statistics.median(rates["diffusers"]),
        "rounds": rates,
    }
    result["ratio"] = result["ours_samples_per_s"] / result["diffusers_samples_per_s"]
    if device.type == "cuda":
        model, opt, fn = runs["ours"]
        flops = step_flops(fn, model, opt, data, autocast) / batch  # per sample, fwd + bwd
        name_gpu = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16.items() if k in name_gpu), None)
        result["flops_per_sample"] = flops
        for key in runs:
            achieved = flops * result[f"{key}_samples_per_s"]
            result[f"{key}_tflops"] = achieved / 1e12
            result[f"{key}_mfu"] = None if peak is None else achieved / peak
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="S3DiT-T/2,S3DiT-XS/2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on CPU, 256 on CUDA")
    parser.add_argument("--size", type=int, default=32, help="image (latent) side in pixels")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per round")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in both")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = args.batch or (256 if device.type == "cuda" else 16)
    meta = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    try:
        import diffusers

        meta["diffusers"] = diffusers.__version__
    except ImportError:
        raise SystemExit("bench_s3dit needs diffusers (pip install diffusers)") from None
    results = []
    for name in args.presets.split(","):
        r = bench_preset(name, batch, args.size, device, args.rounds, args.steps, args.checkpointing)
        results.append(r)
        line = (
            f"{name:12s} batch {batch} {r['image']}: ours {r['ours_samples_per_s']:.1f}/s, "
            f"diffusers {r['diffusers_samples_per_s']:.1f}/s, ratio {r['ratio']:.2f}x"
        )
        if "ours_mfu" in r and r["ours_mfu"] is not None:
            line += f", MFU ours {r['ours_mfu']:.1%} diffusers {r['diffusers_mfu']:.1%}"
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
