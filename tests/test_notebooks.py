"""The notebooks in ``notebooks/`` run top to bottom and show what they claim to show.

Each notebook is executed in a fresh ``python3`` kernel by nbclient. The kernel inherits
``os.environ``, so the parameters are passed as environment variables set before it starts:
``KR_NOTEBOOK_SCALE=smoke`` and ``KR_NOTEBOOK_OUTPUT_DIR`` (a pytest temporary folder). Without a
``python3`` kernel spec installed, jupyter_client falls back to ipykernel's native one (this
interpreter), and a spec whose command is plain ``python`` is also started with this interpreter.

The committed notebooks carry their outputs and figures (``python notebooks/build.py`` writes them);
the tests execute a copy in memory and leave the files as they are.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("evaluate")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
QUICKSTART = NOTEBOOKS / "01_quickstart.ipynb"
SST2 = NOTEBOOKS / "02_sst2_reproduction.ipynb"
STUDENTS = ("DistilBERT-style", "PKD", "TinyBERT-style")


@pytest.fixture
def notebook_env(monkeypatch, tmp_path):
    """Environment of the kernel: smoke scale, outputs under ``tmp_path/out``, offline."""
    out = tmp_path / "out"
    monkeypatch.setenv("KR_NOTEBOOK_SCALE", "smoke")
    monkeypatch.setenv("KR_NOTEBOOK_OUTPUT_DIR", str(out))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return out


def _execute(path: Path):
    """Runs every cell of the notebook at ``path`` in ``notebooks/``; returns the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError, with the traceback, at the first failing cell
    errors = [
        (cell.get("id"), out.get("ename"), out.get("evalue"))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors, errors
    return nb


def _cell(nb, cell_id: str):
    matches = [cell for cell in nb.cells if cell.get("id") == cell_id]
    assert len(matches) == 1, f"no single cell with id {cell_id!r}"
    return matches[0]


def _text(cell) -> str:
    """Everything a code cell printed or returned, as text."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/markdown", "") or out.data.get("text/plain", ""))
    return "\n".join(parts)


def _images(nb) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


@pytest.mark.parametrize(("path", "figures"), [(QUICKSTART, 2), (SST2, 7)], ids=lambda p: getattr(p, "name", p))
def test_committed_notebooks_are_executed_with_their_figures(path, figures):
    """What GitHub and the Hub show: every code cell run in order, its output and figures, no machine paths
    (written by ``python notebooks/build.py``)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert _images(nb) >= figures
    text = json.dumps([cell.outputs for cell in code])
    for machine_path in ("/root/", "/home/", "/tmp/", "/work/", str(Path(__file__).resolve().parents[1])):
        assert machine_path not in text, f"{path.name} outputs name a machine path ({machine_path})"
    assert len({cell.id for cell in nb.cells}) == len(nb.cells)


def test_build_script_scrubs_machine_paths(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    pairs = build.placeholders(tmp_path / "out")
    text = f"report in {tmp_path / 'out'}/report.md; repo {build.REPO}/results; scratch /tmp/krs_x1/y"
    assert build.scrub(text, pairs) == "report in <output dir>/report.md; repo <repo>/results; scratch <temporary dir>/y"


def test_quickstart_notebook(notebook_env):
    nb = _execute(QUICKSTART)

    # the evaluate metric's result dict, displayed as the cell's value
    (value,) = [out for out in _cell(nb, "quickstart-03").outputs if out.output_type == "execute_result"]
    result = ast.literal_eval(value.data["text/plain"])
    assert 0.0 <= result["krs"] <= 1.0 and 0.0 <= result["fss"] <= 1.0 and 0.0 <= result["aoag"] <= 1.0
    assert (result["alpha"], result["beta"], result["num_examples"]) == (0.3, 0.7, 500)
    assert result["krs"] == pytest.approx(0.3 * result["fss"] + 0.7 * result["aoag"])

    # streaming (add_batch, LinearCKAAccumulator) equals the one-shot numbers, as printed
    streamed = _text(_cell(nb, "quickstart-05")).split()
    assert streamed[4] == streamed[-1] == f"{result['krs']:.6f}"
    printed = _text(_cell(nb, "quickstart-15")).splitlines()
    cka_lines = [line.split(":")[1].strip() for line in printed if ":" in line]
    assert len(cka_lines) == 3 and len(set(cka_lines)) == 1

    # real models: the copied student retains more than the random one
    pair = _text(_cell(nb, "quickstart-18"))
    scored = [line.split("KRS") for line in pair.splitlines() if "KRS" in line]
    krs = {name.strip(): float(rest.split()[0]) for name, rest in scored}
    assert set(krs) == {"every-other-layer copy", "random 2-layer"}
    assert all(0.0 <= v <= 1.0 for v in krs.values())
    assert krs["every-other-layer copy"] > krs["random 2-layer"]

    # the report written to KR_NOTEBOOK_OUTPUT_DIR/report
    report = json.loads((notebook_env / "report" / "report.json").read_text(encoding="utf-8"))
    assert report["headline"]["krs"] == pytest.approx(krs["every-other-layer copy"], abs=5e-4)
    assert (notebook_env / "report" / "report.md").is_file()
    assert (notebook_env / "alpha_sensitivity.png").is_file()
    assert _images(nb) >= 2  # the alpha-sensitivity curve and the cross-layer CKA heatmap


def test_sst2_reproduction_notebook(notebook_env, monkeypatch):
    # Point the "committed CPU-scale results" section at this run's own output, which the notebook
    # writes before it gets there, so that the section's display path is exercised too.
    monkeypatch.setenv("KR_NOTEBOOK_CPU_RESULTS", str(notebook_env))
    nb = _execute(SST2)

    table = (notebook_env / "table.md").read_text(encoding="utf-8")
    ours = table.split("The paper's Table 9")[0]
    assert "scale `smoke`" in ours
    assert all(f"| {name} |" in ours for name in STUDENTS)

    results = json.loads((notebook_env / "results.json").read_text(encoding="utf-8"))
    rows = {(row["name"], row["variant"]) for row in results["students"]}
    students = ("distilbert", "pkd", "tinybert")
    variants = ("before", "after")
    assert {(name, variant) for name in students for variant in variants} <= rows
    # and, when the pipeline runs it, the teacher-initialised ablation
    assert rows <= {(name, variant) for name in (*students, "distilbert_teacher_init") for variant in variants}
    assert all(0.0 <= row["krs"] <= 1.0 for row in results["students"])
    assert all((notebook_env / rel).is_file() for rel in results["files"].values())

    shown = _text(_cell(nb, "sst2-05"))  # table.md rendered as Markdown
    assert all(name in shown for name in STUDENTS)
    cpu_section = _text(_cell(nb, "sst2-12"))
    assert all(name in cpu_section for name in STUDENTS) and "No committed" not in cpu_section
    # alpha sensitivity + 2 heatmaps of the run; for the "CPU" results alpha sensitivity + one heatmap per
    # distilled ("after") student, the teacher-initialised ablation included when the pipeline ran it
    after = sum(row["variant"] == "after" for row in results["students"])
    assert _images(nb) == 3 + 1 + after
