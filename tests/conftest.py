"""Shared fixtures. Test data builders live in tests/data.py."""

from __future__ import annotations

import os
import tempfile

import pytest

from tests.data import Case, bad_input_cases, write_case_folder

# No usage-stats prompt or upload from Ray in tests (the machines have no general network).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def cases() -> dict[str, Case]:
    return bad_input_cases()


@pytest.fixture(scope="session")
def case_folder(cases, tmp_path_factory) -> str:
    return write_case_folder(str(tmp_path_factory.mktemp("cases") / "pairs"), cases)


@pytest.fixture
def scratch_dir():
    with tempfile.TemporaryDirectory(prefix="zcurate-test-") as d:
        yield d


@pytest.fixture(scope="session")
def curated_ws(tmp_path_factory):
    """A small workspace curated with every stage (tests/curated.py); treat it as read-only
    except for manifests, which are content-addressed."""
    from tests.curated import curate_small_workspace

    return curate_small_workspace(str(tmp_path_factory.mktemp("curated") / "ws"))


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on 2 cores shared with other jobs (Ray workers in other tests), OpenMP's
    spinning threads make small ops 10-100x slower; one thread is also bit-reproducible."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def clipart_rows() -> list[dict]:
    """Manifest rows of 64 real openclipart pairs (tests/engine/s3dit/manifests.py)."""
    from tests.engine.s3dit.manifests import openclipart_rows

    return openclipart_rows(64)
