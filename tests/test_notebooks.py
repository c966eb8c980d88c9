"""The notebooks in notebooks/: committed without outputs (fast), and each executed with nbclient on
a copy of the curated test workspace (slow), checking its figures and that the numbers it prints are
the workspace's."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = ["01_quickstart", "02_statistics", "03_manifests", "04_training", "05_payoff"]
KERNEL = "zcurate-test-venv"  # a kernel spec of this venv's Python, written to a temp dir per run
CELL_TIMEOUT_S = 600  # the longest cell is the training run: ~1 minute on 2 busy cores


def load_strip_script():
    spec = importlib.util.spec_from_file_location("strip_notebooks", ROOT / "scripts" / "strip_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


strip = load_strip_script()


# --- committed without outputs ---------------------------------------------------------------------


def test_the_five_notebooks_are_there():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_is_valid_and_has_no_outputs(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert len(code) >= 4
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, (name, cell.id)
    assert not strip.needs_strip(path), f"run: python scripts/strip_notebooks.py {path}"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "ZCURATE_WORKSPACE" in first.source  # says where it reads


def test_strip_clears_what_a_run_leaves(tmp_path):
    nb = new_notebook(cells=[new_markdown_cell("# title"), new_code_cell("print(1)")])
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python"}
    cell = nb.cells[1]
    cell.execution_count = 3
    cell.metadata["execution"] = {"iopub.execute_input": "2026-11-26T08:00:00Z"}
    cell.outputs = [
        new_output("stream", name="stdout", text="1\n"),
        new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
    ]
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)
    assert strip.main(["--check", str(path)]) == 1
    assert strip.main([str(path)]) == 0
    assert strip.main(["--check", str(path)]) == 0
    again = nbformat.read(path, as_version=4)
    nbformat.validate(again)
    assert again.cells[1].outputs == [] and again.cells[1].execution_count is None
    assert "execution" not in again.cells[1].metadata
    assert again.metadata.language_info == {"name": "python"}
    assert [c.source for c in again.cells] == ["# title", "print(1)"]


# --- executed on a curated workspace ---------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernel spec running this venv's Python, and every file Jupyter, IPython and matplotlib
    write (connection files, history, font cache) in a temp dir: nothing is registered in $HOME."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "path" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    env = {"JUPYTER_PATH": root / "path", "PYTHONPATH": ROOT}
    for name in (
        "JUPYTER_DATA_DIR",
        "JUPYTER_CONFIG_DIR",
        "JUPYTER_RUNTIME_DIR",
        "IPYTHONDIR",
        "MPLCONFIGDIR",
    ):
        env[name] = root / name.lower()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, str(value))
        mp.delenv("MPLBACKEND", raising=False)  # the notebooks draw inline
        yield mp


def run_notebook(name: str, kernel_env, workspace: str, **env: str) -> nbformat.NotebookNode:
    """Execute notebooks/NAME.ipynb with the repository root as its directory; raises on an error."""
    from nbclient import NotebookClient

    kernel_env.setenv("ZCURATE_WORKSPACE", workspace)
    for key, value in env.items():
        kernel_env.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    return nb


def printed(nb) -> str:
    """Everything the notebook printed (stdout) and the plain-text form of its results."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                parts.append(out.text)
            elif out.output_type == "execute_result":
                parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def figures(nb) -> int:
    return sum(
        1
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.output_type == "display_data" and "image/png" in out.data
    )


def assert_ran_clean(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None, cell.id
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.id


@pytest.fixture
def workspace(curated_ws, tmp_path):
    """A copy of the session's curated workspace (the notebooks write manifests and checkpoints)."""
    from tests.curated import copy_workspace

    return copy_workspace(curated_ws, str(tmp_path / "ws"))


def catalog_one(ws, sql: str) -> tuple:
    from engine.catalog import connect_catalog

    con = connect_catalog(ws)
    try:
        return con.sql(sql).fetchall()[0]
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.ray
def test_quickstart_finds_the_curated_workspace_done_and_shows_it(kernel_env, workspace):
    from engine.curation.manifest_store import list_manifests
    from tests.curated import CURATED_LIMIT

    nb = run_notebook("01_quickstart", kernel_env, workspace.root, ZCURATE_NOTEBOOK_LIMIT=str(CURATED_LIMIT))
    assert_ran_clean(nb)
    text = printed(nb)
    samples, ok, rejected = catalog_one(
        workspace,
        "SELECT count(*), count(*) FILTER (WHERE status = 'ok'), "
        "count(*) FILTER (WHERE status = 'rejected') FROM samples",
    )
    assert samples == CURATED_LIMIT
    assert f"{samples} samples: {ok} ok, {rejected} rejected" in text
    assert " s, 0 of " in text  # every shard was done: the curate call only checked
    (lowres,) = list_manifests(workspace, "lowres")
    assert f"lowres manifest {lowres['manifest_id']}: {lowres['rows']} rows" in text
    assert figures(nb) == 3  # best and worst clip_score, images with OCR text


@pytest.mark.slow
@pytest.mark.ray
def test_statistics_prints_the_workspace_counts_and_draws_its_plots(kernel_env, workspace):
    nb = run_notebook("02_statistics", kernel_env, workspace.root)
    assert_ran_clean(nb)
    text = printed(nb)
    samples, ok, rejected, images = catalog_one(
        workspace,
        "SELECT count(*), count(*) FILTER (WHERE status = 'ok'), "
        "count(*) FILTER (WHERE status = 'rejected'), "
        "count(DISTINCT image_id) FILTER (WHERE status = 'ok') FROM samples",
    )
    assert f"samples {samples}, ok {ok}, rejected {rejected}, distinct_images {images}" in text
    communities, members = catalog_one(
        workspace, "SELECT count(*), coalesce(sum(n_samples), 0) FROM near_duplicates"
    )
    assert communities > 0  # the curated workspace has near-duplicates (openclipart's gradients)
    assert f"near-duplicate communities: {communities} holding {members} samples" in text
    # histograms, sizes, coverage, nearest-neighbour + community sizes, the largest community
    assert figures(nb) == 5


@pytest.mark.slow
@pytest.mark.ray
def test_manifests_builds_lowres_and_sft_and_their_marginals_agree_with_the_sidecars(kernel_env, workspace):
    from engine.curation.manifest_store import list_manifests

    nb = run_notebook("03_manifests", kernel_env, workspace.root)
    assert_ran_clean(nb)  # a cell asserts that the marginal it computes is the sidecar's
    text = printed(nb)
    built = {m["stage"]: m for m in list_manifests(workspace)}
    assert sorted(built) == ["lowres", "sft"]
    for stage, m in built.items():
        assert f"{stage}: manifest {m['manifest_id']}, {m['rows']} rows" in text
        sidecar = json.loads(Path(m["path"]).with_suffix(".json").read_text())
        entropy = sidecar["concept_marginal"]["after"]["normalized_entropy"]
        assert f"-> {entropy:.3f}" in text
    # weights, marginal bars, marginal curves, then one grid per sft concept (up to four)
    assert 4 <= figures(nb) <= 7


@pytest.mark.slow
@pytest.mark.ray
def test_training_runs_three_stages_reports_losses_and_samples(kernel_env, workspace):
    from engine.curation.manifest_store import list_manifests

    nb = run_notebook("04_training", kernel_env, workspace.root)
    assert_ran_clean(nb)
    text = printed(nb)
    run = Path(workspace.root) / "train" / "notebook"
    with open(run / "log.csv") as f:
        log = f.read().splitlines()
    assert len(log) == 1 + 3 * 6  # header + 6 steps in each of 3 stages
    assert "18 steps in " in text and (run / "checkpoints" / "latest.pt").is_file()
    reports = sorted(
        p.relative_to(workspace.root).as_posix() for p in Path(workspace.root, "feedback").rglob("*.parquet")
    )
    assert len(reports) == 6  # every 3 steps
    assert "6 loss reports, 6 manifests rebuilt from them" in text
    assert len(list_manifests(workspace)) == 3 + 6  # the three small-bucket manifests and the rebuilt ones
    assert figures(nb) == 2  # the loss curve and the samples
    assert os.path.getsize(run / "checkpoints" / "latest.pt") > 0


@pytest.mark.slow
@pytest.mark.ray
def test_payoff_runs_the_tiny_experiment_and_shows_its_results(kernel_env, tmp_path):
    """The whole pay-off experiment at plumbing size (a small pool, 6 steps, one seed): pool,
    zcurate curate + manifest, four arms, results JSON and figures; then the notebook reads them."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_payoff

    results_path, figures_dir = tmp_path / "results.json", tmp_path / "figures"
    results = bench_payoff.main(
        [
            "--config",
            "tiny",
            "--work",
            str(tmp_path / "work"),
            "--results",
            str(results_path),
            "--figures",
            str(figures_dir),
            "--threads",
            "1",
        ]
    )
    assert json.loads(results_path.read_text()) == json.loads(json.dumps(results))
    assert sorted(p.name for p in figures_dir.iterdir()) == ["curves.png", "defects.png", "samples.png"]
    assert set(results["arms"]) == {"raw", "random", "curated", "active"}
    for arm in results["arms"].values():
        assert arm["steps"] == [0, 3, 6] and arm["samples_drawn"] == 6 * 8
    curated_rows = results["curated"]["rows"]
    assert results["arms"]["random"]["manifest_rows"] == [curated_rows]
    assert results["arms"]["raw"]["manifest_rows"] == [results["pool"]["pool_rows"]]
    assert results["arms"]["active"]["manifests_followed"][0] >= 1  # the loop rebuilt its manifest
    kept = sum(r["kept"] for r in results["curated"]["defects"])
    assert 0 < kept <= results["pool"]["pool_rows"]

    nb = run_notebook(
        "05_payoff",
        kernel_env,
        str(tmp_path),
        ZCURATE_PAYOFF_RESULTS=str(results_path),
        ZCURATE_PAYOFF_FIGURES=str(figures_dir),
    )
    assert_ran_clean(nb)
    text = printed(nb)
    assert f"pool: {results['pool']['pool_rows']} rows" in text
    loss = results["arms"]["curated"]["final"]["val_loss"]
    assert f"curated  val_loss {loss['mean']:.4f} +- {loss['std']:.4f}" in text
    assert figures(nb) == 3  # the defect table, the learning curves, the sample grid
