"""Executes the notebooks top to bottom and writes them back with their outputs and figures.

    python notebooks/build.py                      # both notebooks
    python notebooks/build.py 02_sst2_reproduction.ipynb

A reader on GitHub or the Hub sees what a run printed and drew. Each notebook runs in a fresh
``python3`` kernel (nbclient) at the same settings as ``tests/test_notebooks.py``:
``KR_NOTEBOOK_SCALE=smoke`` (the SST-2 notebook trains its tiny smoke-scale models, then shows the
committed ``results/sst2/cpu`` tables and figures) and offline. Outputs go to a temporary folder;
paths of this machine in the outputs (that folder, the repository, the home folder) are replaced
by placeholders, so the committed files carry no machine paths. Cell ids and the notebook
metadata are kept; execution counts and outputs are what the run produced.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

NOTEBOOKS_DIR = Path(__file__).resolve().parent
REPO = NOTEBOOKS_DIR.parent
NOTEBOOKS = ("01_quickstart.ipynb", "02_sst2_reproduction.ipynb")
ENVIRONMENT = {
    "KR_NOTEBOOK_SCALE": "smoke",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MPLBACKEND": "Agg",
}


def placeholders(output_dir: Path) -> list[tuple[str, str]]:
    """``(machine path, placeholder)`` pairs, longest first."""
    pairs = [(str(output_dir), "<output dir>"), (str(output_dir.resolve()), "<output dir>"),
             (str(REPO), "<repo>"), (str(Path.home()), "~"), (sys.prefix, "<python>")]
    return sorted({p for p in pairs if p[0] and p[0] != "/"}, key=lambda p: -len(p[0]))


def scrub(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    """``text`` with machine paths replaced (and other temporary folders of this run named as such).

    Example:
        >>> scrub("wrote /tmp/x/report.md", [("/tmp/x", "<output dir>")])
        'wrote <output dir>/report.md'
    """
    for path, name in pairs:
        text = text.replace(path, name)
    return re.sub(r"/tmp/[A-Za-z0-9_.-]+", "<temporary dir>", text)


def _scrub_outputs(nb: object, pairs: Sequence[tuple[str, str]]) -> None:
    for cell in nb.cells:  # type: ignore[attr-defined]
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            if "text" in out:
                out["text"] = scrub(out["text"], pairs)
            for kind, value in (out.get("data") or {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    out["data"][kind] = scrub(value, pairs)
            if out.get("output_type") == "error":
                out["traceback"] = [scrub(line, pairs) for line in out["traceback"]]


def build(name: str, *, timeout: int = 1800) -> Path:
    """Executes ``notebooks/<name>`` in place; returns its path. Raises at the first failing cell."""
    import nbclient
    import nbformat

    path = NOTEBOOKS_DIR / name
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="krs_notebook_") as tmp:
        output_dir = Path(tmp) / "out"
        saved = {key: os.environ.get(key) for key in (*ENVIRONMENT, "KR_NOTEBOOK_OUTPUT_DIR")}
        os.environ.update(ENVIRONMENT, KR_NOTEBOOK_OUTPUT_DIR=str(output_dir))
        try:
            client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                             resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
            client.execute()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        _scrub_outputs(nb, placeholders(output_dir))
    nb.metadata.pop("widgets", None)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", default=list(NOTEBOOKS), help="file names in notebooks/ (default: all)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default: 1800)")
    args = parser.parse_args(argv)
    for name in args.notebooks:
        print(f"executing {name} ...", flush=True)
        print(f"wrote {build(name, timeout=args.timeout).relative_to(REPO)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
