"""Train the default embedder's heads LiT-style on openclipart (``zcurate train-embedder``).

The two towers of ``EffLite0-MiniLM-L6`` are pretrained and frozen (LiT: "locked-image
tuning", Zhai et al. 2022, with the text tower locked too), so only the two linear projection
heads and the logit scale learn. Since the towers never change, their pooled features are
computed once (the slow part: ~5 minutes for openclipart on 2 cores) and cached; the heads then
train on the cached arrays in seconds with open_clip's ``ClipLoss``.

Data: every usable openclipart pair (PNG decoded exactly as ``zcurate curate`` decodes it, alpha
over white; caption = SVG title + keywords). The held-out split is fixed by the image hash
(``image_id``), so one image never sits on both sides. The same data and seed give a
byte-identical heads file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from engine.vectors.default_embedder import (
    CONFIG_DIR,
    DEFAULT_ARCH,
    build_default_model,
    default_preprocess,
    default_tokenizer,
    save_heads,
)
from engine.vectors.model_specs import file_digest

HOLDOUT_BUCKETS = 10  # image_id hash mod 10 == 0 -> held out: a fixed ~10% split (~800 pairs)
FEATURE_BATCH = 64  # images per tower forward while caching features: fills 2 cores, ~40 MB


@dataclass
class TrainConfig:
    """Hyper-parameters of head training; the defaults made the committed heads."""

    epochs: int = 40  # the held-out loss flattens by ~30 epochs on ~7k pairs
    batch_size: int = 256  # in-batch negatives; larger batches barely changed held-out R@10
    lr: float = 2e-3  # AdamW on two linear maps from a fixed random start
    weight_decay: float = 0.05  # light: the heads are small and the data is clean
    seed: int = 0
    limit: int | None = None  # use only the first N openclipart records (tests, quick runs)


@dataclass
class EvalResult:
    """Retrieval quality on the held-out split (one caption per image, all images as the gallery)."""

    pairs: int
    i2t_r1: float  # image -> its caption ranked first among all held-out captions
    i2t_r10: float
    t2i_r1: float
    t2i_r10: float
    auc: float  # P(cos(matched pair) > cos(shuffled pair))
    matched_mean: float  # mean cosine of matched pairs
    shuffled_mean: float


@dataclass
class TrainResult:
    output: str
    data_sha256: str  # sha256 over the (split, sample_id) list: the exact data used
    train_pairs: int
    heldout_pairs: int
    config: dict
    heldout: dict  # EvalResult of the trained heads
    heldout_untrained: dict  # the same with the random initial heads, for scale
    seconds_features: float
    seconds_train: float
    rejected: dict[str, int] = field(default_factory=dict)


# --- data ---------------------------------------------------------------------------------------


def is_heldout(image_id: str) -> bool:
    """The fixed split: the first byte of the image hash picks the bucket."""
    return int(image_id[:8], 16) % HOLDOUT_BUCKETS == 0


def openclipart_pairs(limit: int | None = None):
    """Usable openclipart pairs in source order: yields (sample_id, image_id, caption, RGB image)."""
    from engine.profiling.ingest import IngestConfig, ingest_record
    from engine.profiling.source import load_source

    source = load_source("openclipart")
    rows = source.list_records()
    if limit is not None:
        rows = rows.slice(0, limit)
    config = IngestConfig()
    for record in source.read_records(rows):
        result = ingest_record(record, source.key, config)
        if result.ok:
            yield result.row["sample_id"], result.row["image_id"], result.row["caption"], result.image
        else:
            yield None, None, result.row["reject_reason"], None


def tower_features(model, tokenizer, preprocess, pairs, progress: Callable[[int], None] | None = None):
    """Pooled (pre-projection) image and text features of every pair, plus ids and captions."""
    import torch

    heads = model.visual.head.proj, model.text.proj
    model.visual.head.proj, model.text.proj = torch.nn.Identity(), torch.nn.Identity()
    image_features, text_features, ids, captions, rejected = [], [], [], [], {}
    pixels: list = []

    def flush():
        if pixels:
            batch = torch.stack(pixels).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                image_features.append(model.encode_image(batch).float().numpy())
            pixels.clear()

    try:
        model.visual.to(memory_format=torch.channels_last)
        seen: set[str] = set()
        for sample_id, image_id, caption, image in pairs:
            if sample_id is None:
                rejected[caption] = rejected.get(caption, 0) + 1
                continue
            if sample_id in seen:  # the same pair listed twice
                continue
            seen.add(sample_id)
            pixels.append(preprocess(image))
            ids.append((sample_id, image_id))
            captions.append(caption)
            if len(pixels) == FEATURE_BATCH:
                flush()
                if progress:
                    progress(len(ids))
        flush()
        for start in range(0, len(captions), 256):
            with torch.inference_mode():
                tokens = tokenizer(captions[start : start + 256])
                text_features.append(model.encode_text(tokens).float().numpy())
    finally:
        model.visual.head.proj, model.text.proj = heads
    empty = np.zeros((0, 1), np.float32)
    return (
        np.concatenate(image_features) if image_features else empty,
        np.concatenate(text_features) if text_features else empty,
        ids,
        captions,
        rejected,
    )


def cached_features(cache_dir: str, limit: int | None, progress=None):
    """Tower features of openclipart, computed once and kept in ``cache_dir`` (an .npz)."""
    config_digest = file_digest(CONFIG_DIR / f"{DEFAULT_ARCH}.json")
    path = os.path.join(cache_dir, f"embed-features-{config_digest}-{limit or 'all'}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as data:
            rejected = json.loads(str(data["rejected"]))
            return (data["image"], data["text"], data["ids"].tolist(), data["captions"].tolist(), rejected)
    model = build_default_model(heads_path=None)
    tokenizer = default_tokenizer()
    preprocess = default_preprocess(model)
    result = tower_features(model, tokenizer, preprocess, openclipart_pairs(limit), progress)
    image, text, ids, captions, rejected = result
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + f".{os.getpid()}.tmp.npz"
    np.savez(
        tmp,
        image=image,
        text=text,
        ids=np.array(ids, dtype=str).reshape(-1, 2),
        captions=np.array(captions, dtype=str),
        rejected=np.array(json.dumps(rejected)),
    )
    os.replace(tmp, path)
    return image, text, [tuple(i) for i in ids], captions, rejected


# --- training and evaluation --------------------------------------------------------------------


def evaluate(image_vecs: np.ndarray, text_vecs: np.ndarray, seed: int = 0) -> EvalResult:
    """Retrieval metrics for unit vectors where row i of each is one matched pair."""
    from scipy.stats import rankdata

    n = len(image_vecs)
    sims = image_vecs @ text_vecs.T  # (n images, n captions)
    matched = np.diag(sims)

    def recall(s: np.ndarray, k: int) -> float:
        # rank of the true match = how many candidates score strictly higher
        ranks = (s > np.diag(s)[:, None]).sum(axis=1)
        return float((ranks < k).mean())

    rng = np.random.default_rng(seed)
    shift = rng.integers(1, n) if n > 1 else 0
    shuffled = sims[np.arange(n), (np.arange(n) + shift) % n]  # a derangement: never the match
    # AUC by the rank-sum (Mann-Whitney U) formula; ties get their average rank (count half).
    ranks = rankdata(np.concatenate([matched, shuffled]))
    auc = (ranks[:n].sum() - n * (n + 1) / 2) / (n * n)
    return EvalResult(
        pairs=n,
        i2t_r1=recall(sims, 1),
        i2t_r10=recall(sims, 10),
        t2i_r1=recall(sims.T, 1),
        t2i_r10=recall(sims.T, 10),
        auc=float(auc),
        matched_mean=float(matched.mean()),
        shuffled_mean=float(shuffled.mean()),
    )


def project(features: np.ndarray, weight) -> np.ndarray:
    """Features through a linear head (torch weight, out x in), L2-normalised."""
    x = features @ weight.detach().numpy().T
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def train_heads(model, image: np.ndarray, text: np.ndarray, config: TrainConfig) -> None:
    """Fit ``visual.head.proj``, ``text.proj`` and ``logit_scale`` on paired features (in place)."""
    import torch
    from open_clip.loss import ClipLoss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float sums in the same order, run after run
    try:
        generator = torch.Generator().manual_seed(config.seed)
        params = [model.visual.head.proj.weight, model.text.proj.weight, model.logit_scale]
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        loss_fn = ClipLoss()
        x_img, x_txt = torch.from_numpy(image), torch.from_numpy(text)
        steps = config.epochs * max(1, len(x_img) // config.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        for _ in range(config.epochs):
            order = torch.randperm(len(x_img), generator=generator)
            for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
                batch = order[start : start + config.batch_size]
                img = torch.nn.functional.normalize(model.visual.head.proj(x_img[batch]), dim=-1)
                txt = torch.nn.functional.normalize(model.text.proj(x_txt[batch]), dim=-1)
                loss = loss_fn(img, txt, model.logit_scale.exp())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                with torch.no_grad():  # CLIP's clamp: temperature no lower than 1/100
                    model.logit_scale.clamp_(0, np.log(100))
    finally:
        torch.set_num_threads(threads)


def reset_heads(model, seed: int) -> None:
    """A fixed random start for the heads (open_clip's own init, seeded) and CLIP's 1/0.07 scale."""
    import torch

    torch.manual_seed(seed)
    model.visual.head.proj.reset_parameters()
    model.text.proj.reset_parameters()
    with torch.no_grad():
        model.logit_scale.fill_(float(np.log(1 / 0.07)))


def train_embedder(
    output: str,
    config: TrainConfig | None = None,
    cache_dir: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Cache tower features of openclipart, train the heads, evaluate, write ``output``."""
    config = config or TrainConfig()
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "zcurate-cache")
    started = time.time()
    image, text, ids, _captions, rejected = cached_features(cache_dir, config.limit, progress)
    seconds_features = time.time() - started
    heldout = np.array([is_heldout(image_id) for _, image_id in ids], dtype=bool)
    if heldout.all() or not heldout.any():
        raise ValueError(f"{len(ids)} pairs do not make a train and a held-out split; use more data")
    split = ["heldout" if h else "train" for h in heldout]
    manifest = "".join(f"{part}\t{sample_id}\n" for part, (sample_id, _) in zip(split, ids, strict=True))
    data_sha256 = hashlib.sha256(manifest.encode()).hexdigest()

    model = build_default_model(heads_path=None)
    reset_heads(model, config.seed)
    untrained = evaluate(
        project(image[heldout], model.visual.head.proj.weight), project(text[heldout], model.text.proj.weight)
    )
    started = time.time()
    train_heads(model, image[~heldout], text[~heldout], config)
    seconds_train = time.time() - started
    trained = evaluate(
        project(image[heldout], model.visual.head.proj.weight), project(text[heldout], model.text.proj.weight)
    )
    result = TrainResult(
        output=output,
        data_sha256=data_sha256,
        train_pairs=int((~heldout).sum()),
        heldout_pairs=int(heldout.sum()),
        config=asdict(config),
        heldout=asdict(trained),
        heldout_untrained=asdict(untrained),
        seconds_features=round(seconds_features, 1),
        seconds_train=round(seconds_train, 1),
        rejected=rejected,
    )
    provenance = {
        "architecture": DEFAULT_ARCH,
        "data": "openclipart (Debian openclipart-png + openclipart-svg), usable pairs, image_id split",
        "data_sha256": data_sha256,
        "train_config": asdict(config),
        "heldout": asdict(trained),
    }
    # One metadata key: safetensors writes several in hash-map order, which changes run to run.
    metadata = {"zcurate": json.dumps(provenance, sort_keys=True)}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    save_heads(model, output, metadata)
    return result
