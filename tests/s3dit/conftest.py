"""Fixtures for the trainer's tests: a real openclipart manifest (see manifests.py) and threads."""

from __future__ import annotations

import pytest
import torch

from tests.s3dit.manifests import openclipart_rows, write_manifest


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on 2 cores shared with other jobs (Ray workers in other tests), OpenMP's
    spinning threads make small ops 10-100x slower; one thread is also bit-reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def clipart_rows() -> list[dict]:
    return openclipart_rows(64)


@pytest.fixture
def manifest(tmp_path, clipart_rows) -> str:
    return write_manifest(str(tmp_path / "lowres.parquet"), clipart_rows)
