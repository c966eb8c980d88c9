"""What a manifest depends on, hashed into its id: inputs, recipe, seed, size, feedback, boosts, code.

``manifest_id`` hashes the inputs (each input file's name, size and Parquet footer), the recipe,
the seed, the size, the feedback reports and the boosts, and the engine version: the same inputs
give the same id and a byte-identical file, and a build whose file exists returns it at once.
``manifest_identity`` gives the id without building (reads footers and reports only).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from importlib import metadata

import pyarrow as pa

from engine.curation.feedback import (
    FeedbackConfig,
    FeedbackState,
    read_boosts,
    stage_feedback,
)
from engine.curation.recipe import Recipe
from engine.workspace import Workspace

# Tables a manifest reads; their files are fingerprinted into the manifest id.
INPUT_TABLES = (
    "samples",
    "signals",
    "embeddings",
    "safety",
    "ocr",
    "quality",
    "nudity",
    "dedup",
    "tags",
    "concepts",
    "concept_ancestors",
)

FOOTER_BYTES = 65536  # the tail of a Parquet file: its footer (schema, row groups, statistics)

# The modules whose code decides a manifest's bytes: their digest is part of the engine version,
# so a fixed or changed rule gives new manifest ids instead of returning files the old code wrote.
MANIFEST_CODE = (
    "manifest.py",
    "manifest_weights.py",
    "manifest_assembly.py",
    "manifest_identity.py",
    "pool.py",
    "captions.py",
    "concept_sets.py",
    "sampling.py",
    "balancing.py",
    "recipe.py",
    "feedback.py",
)


@functools.cache
def engine_version() -> str:
    """The package version plus a digest of the manifest code, e.g. ``0.1.0+3f2a9c0d1e2b``."""
    try:
        version = metadata.version("zcurate")
    except metadata.PackageNotFoundError:
        version = "0"
    digest = hashlib.sha256()
    for name in MANIFEST_CODE:
        with open(os.path.join(os.path.dirname(__file__), name), "rb") as f:
            digest.update(f.read())
    return f"{version}+{digest.hexdigest()[:12]}"


def input_fingerprints(ws: Workspace) -> dict[str, dict]:
    """Per input table: its file count and a sha256 of every file's name, size and footer bytes.

    A Parquet footer holds the row groups' sizes and column statistics, so a changed file changes
    its footer; hashing footers keeps the id cheap on tables of many gigabytes (embeddings).
    """
    result = {}
    for table in INPUT_TABLES:
        digest = hashlib.sha256()
        folder = ws.table_rel(table)  # embeddings: the active model's
        files = ws.list_files(folder, ".parquet")
        for name in files:
            path = ws.path(folder, name)
            size = ws.fs.get_file_info(path).size
            with ws.fs.open_input_file(path) as f:
                f.seek(max(0, size - FOOTER_BYTES))
                tail = f.read()
            digest.update(f"{name}\0{size}\0".encode())
            digest.update(hashlib.sha256(tail).digest())
        result[table] = {"files": len(files), "sha256": digest.hexdigest() if files else ""}
    return result


def make_manifest_id(identity: dict) -> str:
    """16 hex digits of the sha256 of the canonical JSON of everything a manifest depends on."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def feedback_config(recipe: Recipe) -> FeedbackConfig:
    """The recipe's [feedback] step as engine.curation.feedback's config."""
    f = recipe.feedback
    return FeedbackConfig(step_size=f.step_size, smoothing=f.smoothing, cap=f.cap, min_samples=f.min_samples)


@dataclass
class ManifestInputs:
    """Everything a manifest's identity hashes, read once (cheap: Parquet footers, feedback reports
    and boost files; no table is scanned)."""

    manifest_id: str
    identity: dict  # what make_manifest_id hashes
    inputs: dict[str, dict]  # input_fingerprints
    feedback: FeedbackState | None  # None when the recipe disables feedback
    boosts: pa.Table  # read_boosts: sample_id, factor
    boosts_fingerprint: str


def gather_inputs(ws: Workspace, recipe: Recipe, seed: int = 0, size: int | None = None) -> ManifestInputs:
    """The identity of the manifest ``build_manifest(ws, recipe, seed, size)`` would write, with the
    feedback state and boosts it reads."""
    feedback = stage_feedback(ws, recipe.stage, feedback_config(recipe)) if recipe.feedback.enabled else None
    boosts, boosts_fingerprint = read_boosts(ws, recipe.stage)
    inputs = input_fingerprints(ws)
    identity = {
        "engine": engine_version(),
        "inputs": {name: info["sha256"] for name, info in inputs.items()},
        "recipe": recipe.to_dict(),
        "seed": seed,
        "size": size,
        "feedback": feedback.fingerprint if feedback else "",
        "boosts": boosts_fingerprint,
    }
    return ManifestInputs(make_manifest_id(identity), identity, inputs, feedback, boosts, boosts_fingerprint)


def manifest_identity(
    ws: Workspace, recipe: Recipe, seed: int = 0, size: int | None = None
) -> tuple[str, dict]:
    """(manifest_id, identity) of a build without building it: what a service answers at once."""
    found = gather_inputs(ws, recipe, seed, size)
    return found.manifest_id, found.identity
