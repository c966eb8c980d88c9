"""Train the default embedder's heads LiT-style (``zcurate train-embedder``).

The two towers of ``EffLite0-MiniLM-L6`` are pretrained and frozen (LiT: "locked-image
tuning", Zhai et al. 2022, with the text tower locked too), so only the two linear projection
heads and the logit scale learn. Since the towers never change, their pooled features are
computed once per source (the slow part: ~7 minutes for all sources on 2 cores) and cached; the
heads then train on the cached arrays in seconds with open_clip's ``ClipLoss``.

Data (``embedder_sources``): openclipart, Noto emoji and the GNOME icons are trained on, split
by ``embedder_split`` into train and an in-distribution test split so that no caption, file name
or picture sits on both sides. Settings are chosen with the emoji left out of training and
judged on them (a source the heads did not see); the final heads then train on every training
source. The elementary-xfce icons are a whole source held out from all of it, and the reserved
Tux Paint stamps are measured when installed; pairs of either that share a caption, name or
picture with the training split are left out of their measure. The same data and seed give a
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
    DEFAULT_ARCH,
    DEFAULT_HEADS,
    build_default_model,
    save_heads,
)
from engine.vectors.embedder_features import SourceFeatures, cached_features
from engine.vectors.embedder_sources import PACKAGES, RESERVED_SOURCES, TUXPAINT_ROOT
from engine.vectors.embedder_split import grouped_split, leaks_into, normalised_caption

TRAIN_SOURCES = ("openclipart", "noto-emoji", "gnome-icons")
VALIDATION_SOURCE = "noto-emoji"  # left out of training while settings are chosen, then trained on
HELDOUT_SOURCE = "elementary-icons"  # a whole source never trained on or chosen by: the measure
INDEPENDENT_SOURCE = "tuxpaint"  # the project's reserved evaluation set, reported when installed


@dataclass
class TrainConfig:
    """Hyper-parameters of head training; the defaults are what ``--search`` chose for the shipped heads."""

    epochs: int = 5
    batch_size: int = 256  # in-batch negatives
    lr: float = 2e-3  # AdamW on two linear maps from a fixed random start
    weight_decay: float = 0.5
    seed: int = 0
    limit: int | None = None  # use only the first N pairs of each source (tests, quick runs)
    sources: tuple[str, ...] = TRAIN_SOURCES
    validation_source: str = VALIDATION_SOURCE
    heldout_source: str = HELDOUT_SOURCE


# What ``--search`` tries. Each is trained without the validation source and judged by its AUC
# there: a source the heads did not see, so the choice favours settings that carry over to new
# data (on the in-distribution split, more epochs always look better).
SEARCH_GRID = tuple(
    {"epochs": epochs, "weight_decay": decay} for epochs in (3, 5, 10, 40) for decay in (0.05, 0.5)
)


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
    data_sha256: str  # sha256 over the (split, source/key) list: the exact data used
    pairs: dict[str, int]  # train, test, and each measured source after its leaks are left out
    config: dict
    search: list[dict]  # each tried setting with its result on the validation source
    results: dict[str, dict]  # test split or source -> EvalResult of the trained heads
    untrained: dict  # the in-distribution test split with the random initial heads, for scale
    left_out: dict[str, int]  # measured sources: pairs dropped for sharing a caption/name/picture
    duplicates_dropped: int  # identical records (same picture and caption) across the sources
    seconds_features: float
    seconds_train: float
    rejected: dict[str, int] = field(default_factory=dict)


# --- data ---------------------------------------------------------------------------------------


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


def pooled(parts: dict[str, SourceFeatures]) -> tuple[SourceFeatures, np.ndarray, int]:
    """The training sources as one table with a source column; identical records dropped.

    An identical record is a picture (equal pHash) with the same normalised caption as an earlier
    pair of any source: it would only weigh one pair twice.
    """
    rows, names, seen, dropped = [], [], set(), 0
    for name, part in parts.items():
        for i, caption in enumerate(part.captions):
            identity = (int(part.phash[i]), normalised_caption(caption))
            if identity in seen:
                dropped += 1
                continue
            seen.add(identity)
            rows.append((name, i))
            names.append(name)

    def column(attr):
        return [getattr(parts[name], attr)[i] for name, i in rows]

    table = SourceFeatures(
        image=np.stack(column("image")).astype(np.float32),
        text=np.stack(column("text")).astype(np.float32),
        keys=[f"{name}/{key}" for name, key in zip(names, column("keys"), strict=True)],
        captions=column("captions"),
        basenames=column("basenames"),
        phash=np.array(column("phash"), dtype=np.uint64),
        rejected={},
    )
    return table, np.array(names), dropped


def heads_results(model, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict]:
    """EvalResult (as a dict) of the model's heads on each named (image, text) feature pair."""
    image_head, text_head = model.visual.head.proj.weight, model.text.proj.weight
    return {
        name: asdict(evaluate(project(image, image_head), project(text, text_head)))
        for name, (image, text) in parts.items()
    }


def fit(image: np.ndarray, text: np.ndarray, config: TrainConfig):
    """A model whose heads start from the seeded random init and are trained on the pairs."""
    model = build_default_model(heads_path=None)
    reset_heads(model, config.seed)
    train_heads(model, image, text, config)
    return model


def unleaked(train: SourceFeatures, mask: np.ndarray, other: SourceFeatures):
    """``other``'s (image, text) features without the pairs that leak from ``train[mask]``, and how many."""
    rows = np.flatnonzero(mask)
    seen = ([train.captions[i] for i in rows], [train.basenames[i] for i in rows], train.phash[rows])
    leak = leaks_into(seen, (other.captions, other.basenames, other.phash))
    return (other.image[~leak], other.text[~leak]), int(leak.sum())


def choose_setting(
    table: SourceFeatures, sources: np.ndarray, train: np.ndarray, held: SourceFeatures, config
):
    """Each SEARCH_GRID setting trained without the validation source, judged on it."""
    from dataclasses import replace

    without = train & (sources != config.validation_source)
    measured, _ = unleaked(table, without, held)
    tried = []
    for setting in SEARCH_GRID:
        model = fit(table.image[without], table.text[without], replace(config, **setting))
        tried.append(
            {"setting": setting, config.validation_source: heads_results(model, {"v": measured})["v"]}
        )
    best = max(
        tried, key=lambda t: (t[config.validation_source]["auc"], t[config.validation_source]["i2t_r10"])
    )
    return replace(config, **best["setting"]), tried


def train_embedder(
    output: str,
    config: TrainConfig | None = None,
    cache_dir: str | None = None,
    progress: Callable[[int], None] | None = None,
    search: bool = False,
) -> TrainResult:
    """Cache tower features of every source, split without leaks, train the heads, write ``output``.

    ``search`` first chooses the setting (``choose_setting``). The held-out source and the
    independent one are only measured, never trained on or chosen by.
    """
    config = config or TrainConfig()
    if set(config.sources) & set(RESERVED_SOURCES):
        raise ValueError(
            f"{', '.join(RESERVED_SOURCES)} is reserved for independent evaluation: never train on it"
        )
    if config.validation_source not in config.sources or config.heldout_source in config.sources:
        raise ValueError(
            "the validation source must be a training source and the held-out source must not be"
        )
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "zcurate-cache")
    started = time.time()
    parts = {name: cached_features(cache_dir, name, config.limit, progress) for name in config.sources}
    table, sources, dropped = pooled(parts)
    split = grouped_split(table.keys, table.captions, table.basenames, table.phash)
    train = split == "train"
    if train.all() or not train.any():
        raise ValueError(f"{len(split)} pairs do not make a train and a test split; use more data")
    measured_names = [config.heldout_source] + ([INDEPENDENT_SOURCE] if os.path.exists(TUXPAINT_ROOT) else [])
    others = {name: cached_features(cache_dir, name, config.limit, progress) for name in measured_names}
    seconds_features = time.time() - started

    started = time.time()
    tried = []
    if search:
        config, tried = choose_setting(table, sources, train, parts[config.validation_source], config)
    model = fit(table.image[train], table.text[train], config)
    seconds_train = time.time() - started
    measured = {"test": (table.image[~train], table.text[~train])}
    left_out = {}
    for name, other in others.items():
        measured[name], left_out[name] = unleaked(table, train, other)
    untrained = build_default_model(heads_path=None)
    reset_heads(untrained, config.seed)

    listing = "".join(f"{part}\t{key}\n" for part, key in zip(split, table.keys, strict=True))
    result = TrainResult(
        output=output,
        data_sha256=hashlib.sha256(listing.encode()).hexdigest(),
        pairs={"train": int(train.sum())} | {name: len(image) for name, (image, _) in measured.items()},
        config=asdict(config),
        search=tried,
        results=heads_results(model, measured),
        untrained=heads_results(untrained, {"test": measured["test"]})["test"],
        left_out=left_out,
        duplicates_dropped=dropped,
        seconds_features=round(seconds_features, 1),
        seconds_train=round(seconds_train, 1),
        rejected={k: v for part in parts.values() for k, v in part.rejected.items()},
    )
    write_heads(model, output, result, test_keys=sorted(np.asarray(table.keys)[~train].tolist()))
    return result


def source_commit() -> str:
    """The repository's commit, '-dirty' when files differ from it: where the figures came from."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        run = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return run.stdout.strip() or "unknown"


def write_heads(model, output: str, result: TrainResult, test_keys: list[str]) -> None:
    """The heads file, with its provenance (data, sources, configuration, measures) in metadata."""
    provenance = {
        "architecture": DEFAULT_ARCH,
        "commit": source_commit(),
        "data": {name: PACKAGES[name] for name in result.config["sources"]},
        "data_sha256": result.data_sha256,
        "train_config": result.config,
        "pairs": result.pairs,
        "results": result.results,
        "search": result.search,
        "test_keys": test_keys,  # 'source/key' of the in-distribution test split: pairs never trained on
    }
    # One metadata key: safetensors writes several in hash-map order, which changes run to run.
    metadata = {"zcurate": json.dumps(provenance, sort_keys=True)}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    save_heads(model, output, metadata)


def heads_provenance(path: str | os.PathLike = DEFAULT_HEADS) -> dict:
    """The training record a heads file carries (``write_heads``'s metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as heads:
        return json.loads((heads.metadata() or {}).get("zcurate", "{}"))


def unseen_openclipart_ids(path: str | os.PathLike = DEFAULT_HEADS) -> frozenset[str]:
    """openclipart sample ids in the heads' in-distribution test split: pairs they never trained on."""
    keys = heads_provenance(path).get("test_keys", [])
    return frozenset(key.removeprefix("openclipart/") for key in keys if key.startswith("openclipart/"))
