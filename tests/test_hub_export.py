"""`knowledge-retention export-hub`: the metric folder loads, computes and starts its widget where the
package is NOT importable (a `python -S` subprocess: the editable install's .pth is never read)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import site
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import knowledge_retention
from knowledge_retention import InputError, compute_krs
from knowledge_retention.cli import EXIT_OK, EXIT_USAGE, main
from knowledge_retention.hub_export import export_hub, maths_modules

pytest.importorskip("evaluate")

NAME = "knowledge_retention"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("hub") / NAME
    assert main(["export-hub", str(target)]) == EXIT_OK
    return target


def _case() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = rng.normal(size=(60, 3, 6)) + 1e3  # (N, L, D), float64, far from the origin
    return {"teacher_features": t, "student_features": t[..., :4] + 0.4 * rng.normal(size=(60, 3, 4)),
            "teacher_outputs": rng.normal(size=(60, 3)), "student_outputs": rng.normal(size=(60, 3))}


def test_the_folder_holds_what_evaluate_fetches(folder):
    from evaluate.loading import get_imports

    modules = maths_modules()
    assert set(modules) == {"_validation", "agreement", "similarity", "score",
                            # issue 19/20: split out of similarity/agreement, the rescaling, states, method list
                            "feature_cka", "kernel_cka", "spatial_agreement", "_numerics", "_state", "methods"}
    imports = get_imports(str(folder / f"{NAME}.py"))
    internal = [name for kind, name, *_ in imports if kind == "internal"]
    assert sorted(internal) == sorted(modules)  # evaluate copies exactly these, and nothing else is relative
    assert not [i for i in imports if i[0] == "external"]
    assert {name for kind, name, *_ in imports if kind == "library"} <= {"datasets", "evaluate", "numpy", "pyarrow",
                                                                           "__future__", "typing"}
    for path in [folder / f"{NAME}.py", *(folder / f"{m}.py" for m in modules)]:
        tree = ast.parse(path.read_text())
        absolute = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0
                    and (n.module or "").startswith(NAME)]
        assert absolute == [], (path.name, absolute)
    for module in modules:  # generated from the package: the same code, imports rewritten
        original = (Path(knowledge_retention.__file__).parent / f"{module}.py").read_text()
        assert original in (folder / f"{module}.py").read_text()


def test_card_requirements_and_widget(folder):
    card = (folder / "README.md").read_text(encoding="utf-8")
    header = card.split("---")[1]
    assert card.startswith("---\n")
    assert re.search(r"^sdk: gradio$", header, re.M) and re.search(r"^app_file: app.py$", header, re.M)
    assert re.search(r"^tags:\n- evaluate\n- metric\n", header, re.M)
    requirements = [line.strip() for line in (folder / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert {re.split(r"[<>=!~ ]", r)[0] for r in requirements} == {"evaluate", "datasets", "pyarrow", "numpy", "scipy",
                                                                    "gradio"}
    assert not [r for r in requirements if r.startswith("-") or "git+" in r or "knowledge" in r]
    assert f'METRIC_SCRIPT = "{NAME}.py"' in (folder / "app.py").read_text()


def _package_free_python() -> tuple[list[str], dict[str, str]]:
    """`python -S` with only the site-packages on PYTHONPATH: .pth files (the editable install) are not read."""
    paths = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if os.path.isdir(p)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "COV_", "PYTEST"))}
    env.update(PYTHONPATH=os.pathsep.join(paths), GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    return [sys.executable, "-S"], env


PROBE = """
import importlib.util, json, os, runpy, sys
print(json.dumps({"find_spec": importlib.util.find_spec("knowledge_retention") is None}))
os.environ["KRS_WIDGET_SMOKE"] = "1"  # first the widget, before anything imported evaluate
runpy.run_path(os.path.join(sys.argv[1], "app.py"), run_name="__main__")
import evaluate
import numpy as np
case = dict(np.load(sys.argv[2]))
module = evaluate.load(sys.argv[1])
out = module.compute(**case, task="nlp")
try:
    module.compute(**{**case, "teacher_outputs": case["teacher_outputs"][:50]}, task="nlp")
    refused = None
except ValueError as err:
    refused = [type(err).__name__, str(err)]
print(json.dumps({"load": out, "refused": refused}))
"""


@pytest.fixture(scope="module")
def package_free_run(folder, tmp_path_factory) -> list[dict]:
    """One subprocess without the package: its app.py started and stopped, then evaluate.load of the folder."""
    work = tmp_path_factory.mktemp("outside")
    np.savez(work / "case.npz", **_case())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    python, env = _package_free_python()
    env.update(GRADIO_SERVER_PORT=str(port), HF_MODULES_CACHE=str(work / "modules"))
    (work / "probe.py").write_text(PROBE)
    done = subprocess.run([*python, str(work / "probe.py"), str(folder), str(work / "case.npz")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_the_subprocess_really_cannot_see_the_package(package_free_run):
    assert package_free_run[0] == {"find_spec": True}
    python, env = _package_free_python()  # control: the same interpreter without -S does see it
    seen = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('knowledge_retention'))"],
                          env={**env, "PYTHONPATH": ""}, cwd="/", capture_output=True, text=True)
    assert "ModuleSpec" in seen.stdout


def test_evaluate_load_of_the_folder_gives_the_package_s_numbers(package_free_run):
    loaded = package_free_run[2]
    expected = compute_krs(**_case(), task="nlp")
    for key in ("krs", "fss", "aoag", "alpha", "beta"):
        assert loaded["load"][key] == pytest.approx(expected[key], abs=1e-12), key
    assert loaded["refused"][0] == "InputError" and "`teacher_outputs`: 50" in loaded["refused"][1]


def test_the_widget_starts_and_computes_without_the_package(package_free_run):
    import pandas as pd

    widget = package_free_run[1]
    assert widget["status"] == 200 and widget["error"] == "" and widget["knowledge_retention_importable"] is False
    assert widget["served_before_evaluate"] is True  # the page is up before evaluate is even imported
    app = _widget_module()
    table = pd.DataFrame(app.EXAMPLE_ROWS, columns=list(app.INPUT_NAMES))
    columns = {n: np.array([json.loads(c) for c in table[n]]) for n in app.INPUT_NAMES}
    expected = compute_krs(*(columns[n] for n in app.INPUT_NAMES), task="nlp")
    assert widget["result"]["krs"] == pytest.approx(expected["krs"], rel=1e-11)


def _widget_module():
    path = Path(knowledge_retention.__file__).parent / "app.py"
    spec = importlib.util.spec_from_file_location("krs_widget_for_hub_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_widget_constants_are_the_package_s():
    from knowledge_retention.agreement import AOAG_METHODS
    from knowledge_retention.score import TASK_PRESETS
    from knowledge_retention.similarity import FSS_METHODS

    app = _widget_module()
    assert set(app.TASKS) <= set(TASK_PRESETS) and set(TASK_PRESETS) - set(app.TASKS) <= set(app.TASKS_NOT_OFFERED)
    assert set(app.FSS_CHOICES) == set(FSS_METHODS)
    assert set(app.AOAG_CHOICES) == {"auto", *AOAG_METHODS} - {"box_iou"}
    assert list(app.INPUT_NAMES) == list(app.load_module().features)


def test_widget_rounds_for_display_and_shows_errors_on_the_page():
    import pandas as pd

    app = _widget_module()
    table = pd.DataFrame(app.EXAMPLE_ROWS, columns=list(app.INPUT_NAMES))
    result, error = app.on_compute(table.copy(), "nlp", "0.9", "linear_cka", "auto", 1.0)
    assert error == "" and result["beta"] == 0.1 and result["alpha"] == 0.9  # 1 - 0.9 would print 0.09999999999999998
    result, error = app.on_compute(table.copy(), "nlp", "", "cosine", "auto", 1.0)
    assert result is None and error.startswith("**Could not compute:**") and "same width" in error
    import gradio as gr

    demo = app.build_widget()
    boxes = [b for b in demo.blocks.values() if isinstance(b, gr.Markdown) and b.elem_id == "krs-widget-error"]
    assert len(boxes) == 1  # the error box is on the page (not a toast)


@pytest.mark.parametrize(("name", "message"), [("my-metric", "letters, digits and underscores"),
                                               ("score", "clashes with the file score.py")])
def test_names_evaluate_cannot_load_are_refused(tmp_path, capsys, name, message):
    assert main(["export-hub", str(tmp_path / name)]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_an_existing_folder_needs_overwrite(tmp_path):
    target = tmp_path / "krs"
    export_hub(target)
    with pytest.raises(InputError, match="--overwrite"):
        export_hub(target)
    assert export_hub(target, overwrite=True)["script"] == target / "krs.py"
