"""Strip outputs from notebooks before committing them (git keeps code, not results).

Clears every code cell's outputs and execution count, the per-cell execution timings Jupyter and
nbclient record, and the notebook metadata that only says which machine ran it last (the kernel's
Python version, widget state). Writes with nbformat, so the file stays valid nbformat 4.

    python scripts/strip_notebooks.py                  # strip notebooks/*.ipynb in place
    python scripts/strip_notebooks.py --check          # list unstripped notebooks, exit 1 if any
    python scripts/strip_notebooks.py path/to/a.ipynb  # only these files
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled")  # timings and view state
KEPT_LANGUAGE_INFO = ("name",)  # the rest (version, mimetype, ...) names the last kernel that ran it


def strip_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Clear outputs, execution counts and volatile metadata of ``nb`` in place; returns it."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)
    if "language_info" in nb.metadata:
        info = nb.metadata.language_info
        nb.metadata.language_info = {k: info[k] for k in KEPT_LANGUAGE_INFO if k in info}
    return nb


def needs_strip(path: Path) -> bool:
    """Whether stripping would change the file's bytes."""
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    text = nbformat.writes(strip_notebook(nb))
    return text.rstrip("\n") + "\n" != path.read_text(encoding="utf-8")  # nbformat.write adds the newline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if any needs stripping")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOKS.glob("*.ipynb"))
    dirty = [p for p in paths if needs_strip(p)]
    for path in dirty:
        if args.check:
            print(f"not stripped: {path}")
        else:
            nb = strip_notebook(nbformat.read(path, as_version=nbformat.NO_CONVERT))
            nbformat.validate(nb)
            nbformat.write(nb, path)
            print(f"stripped {path}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
