"""Fixtures for the trainer's tests: one torch thread for each, and a real openclipart manifest."""

from __future__ import annotations

import pytest

from tests.engine.s3dit.manifests import write_manifest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every trainer test runs with one torch thread (tests/conftest.py says why)."""


@pytest.fixture
def manifest(tmp_path, clipart_rows) -> str:
    return write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows)
