"""The metric's widget: what the Hub runs as ``app.py`` next to the metric script.

The standard evaluate widget is ``launch_gradio_widget(evaluate.load(...))``. With gradio >= 4 it
cannot start: ``evaluate.utils.gradio.launch_gradio_widget`` (evaluate 0.4.6) builds its table with
``gr.inputs.Dataframe`` and ``gr.outputs.Textbox``, removed in gradio 4 (``AttributeError: module
'gradio' has no attribute 'inputs'``). This file is the same widget written against the current
API: the metric is loaded with ``evaluate.load`` and computed with ``module.compute``, and
evaluate's own helper parses the table (one JSON list per cell, as evaluate's widget expects for
nested features). It adds the metric's options (task preset, α, methods, temperature) and shows
errors on the page, in a box that stays until the next result.

It needs neither the ``knowledge_retention`` package nor evaluate to start: the page is built from
the constants below and the card beside this file; ``evaluate`` and the metric are loaded in the
background after the server is up (the first Compute waits for them). ``knowledge-retention
export-hub DIR`` copies this file into a self-contained metric folder.

Run: ``python knowledge_retention/app.py`` (port ``$GRADIO_SERVER_PORT``, default 7860).
``KRS_WIDGET_SMOKE=1`` starts the server, computes the example table once, prints the result as
JSON and stops (what the tests run in an environment without the package).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: The metric script beside this file (``export-hub`` writes the folder's own name here).
METRIC_SCRIPT = "knowledge_retention.py"
# Running this file puts its folder first on sys.path, where `import knowledge_retention` (in the
# package's own metric script) would find the script knowledge_retention.py instead of the package.
# The script is loaded by path through evaluate, so the folder itself is never needed on sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if (HERE / "__init__.py").is_file():  # the package folder of a source checkout without `pip install -e .`
    import importlib.util

    if importlib.util.find_spec("knowledge_retention") is None:
        sys.path.insert(0, str(HERE.parent))

#: The metric's inputs, in its order (tests check them against ``module.features``).
INPUT_NAMES: tuple[str, ...] = ("teacher_features", "student_features", "teacher_outputs", "student_outputs")
#: Task presets offered; tests check them against the package's presets, less those below.
TASKS: tuple[str, ...] = ("classification", "nlp", "regression", "segmentation")
#: Presets a table of one JSON list per cell cannot hold.
TASKS_NOT_OFFERED: dict[str, str] = {"detection": "ragged boxes", "causal-lm": "per-token outputs"}


def _methods() -> Any:
    """The package's one list of methods, ``methods.py`` beside this file (also in the exported Hub folder)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_krs_methods", HERE / "methods.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FSS_CHOICES: tuple[str, ...] = _methods().FSS_METHODS
AOAG_CHOICES: tuple[str, ...] = ("auto", *_methods().ARRAY_AOAG_METHODS)
#: A 4-example table (teacher width 3, student width 2, 2 classes) that fills the widget.
EXAMPLE_ROWS: list[list[str]] = [
    ["[1.0, 0.2, -0.5]", "[0.9, 0.1]", "[2.0, -1.0]", "[1.5, -0.8]"],
    ["[0.3, -1.2, 0.8]", "[0.4, -1.0]", "[-0.5, 1.5]", "[-0.2, 1.1]"],
    ["[-0.7, 0.5, 0.1]", "[-0.6, 0.6]", "[0.3, 0.2]", "[0.1, 0.4]"],
    ["[0.9, 0.9, -1.1]", "[1.0, 0.7]", "[1.2, -0.4]", "[1.0, -0.1]"],
]

_MODULE: dict[str, Any] = {}
_LOCK = threading.Lock()


class WidgetError(ValueError):
    """A message for the person using the widget (bad table, bad option, the metric's refusal)."""


def load_module() -> Any:
    """``evaluate.load`` of the script beside this file, once (works in the repository and in a metric Space)."""
    with _LOCK:
        if "module" not in _MODULE:
            import evaluate

            _MODULE["module"] = evaluate.load(str(HERE / METRIC_SCRIPT))
        return _MODULE["module"]


def _tidy(value: Any) -> Any:
    """Floats to 12 significant digits for display (``1 - 0.9`` shows as 0.1, not 0.09999999999999998)."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tidy(v) for v in value]
    return value


def compute_from_table(
    module: Any,
    data: Any,
    task: str,
    alpha: str | float | None,
    fss_method: str,
    aoag_method: str,
    temperature: float,
) -> dict[str, Any]:
    """Parses the widget's table with evaluate's helper and calls ``module.compute``.

    Returns:
        The metric's dict, floats rounded to 12 significant digits for display.

    Raises:
        WidgetError: with the metric's message when the inputs are invalid.
    """
    from evaluate.utils.gradio import infer_gradio_input_types, parse_gradio_data

    if alpha is None or (isinstance(alpha, str) and not alpha.strip()):
        alpha = None
    else:
        try:
            alpha = float(alpha)
        except ValueError:
            raise WidgetError(f"alpha must be a number in [0, 1] or empty, got {alpha!r}.") from None
    input_types = infer_gradio_input_types(list(module.features.values()))
    try:
        inputs = parse_gradio_data(data, input_types)
    except (ValueError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise WidgetError(f"Each cell must be a JSON list of numbers, e.g. [0.1, -2.0]: {err}") from None
    try:
        out = module.compute(
            **inputs,
            task=task,
            alpha=alpha,
            fss_method=fss_method,
            aoag_method=None if aoag_method == "auto" else aoag_method,
            temperature=float(temperature),
        )
    except (ValueError, TypeError) as err:
        raise WidgetError(str(err)) from None
    return _tidy(out)  # type: ignore[no-any-return]


def on_compute(*args: Any) -> tuple[Any, str]:
    """The button's callback: the result and an empty error box, or no result and the message on the page."""
    try:
        return compute_from_table(load_module(), *args), ""
    except WidgetError as err:
        return None, f"**Could not compute:** {err}"


def _card() -> tuple[str, str]:
    """(title, body) of the metric card beside this file, without its YAML header."""
    path = HERE / "README.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    title = "Knowledge Retention Score"
    if text.startswith("---"):
        header, _, text = text[3:].partition("\n---")
        for line in header.splitlines():
            if line.startswith("title:"):
                title = line.partition(":")[2].strip() or title
    return title, text.lstrip("-\n")


def build_widget(module: Any = None) -> Any:
    """The widget: a table of per-example JSON lists, the metric's options, the result and an error box.

    ``module`` (an evaluate module) is optional: without it the metric is loaded on the first Compute.
    """
    import gradio as gr

    if module is not None:
        _MODULE.setdefault("module", module)
    title, card = _card()
    with gr.Blocks(title=f"Metric: {title}") as demo:
        gr.Markdown(f"# Metric: {title}")
        gr.Markdown(
            "One row per example; each cell is a JSON list: the pooled feature vector of each model "
            "(`[[...], [...]]` for several layers) and its logits. Teacher and student widths may differ."
        )
        table = gr.Dataframe(
            value=EXAMPLE_ROWS,
            headers=list(INPUT_NAMES),
            column_count=len(INPUT_NAMES),
            datatype=["str"] * len(INPUT_NAMES),
            interactive=True,
            label="examples",
        )
        with gr.Row():
            task = gr.Dropdown(list(TASKS), value="classification", label="task preset")
            alpha = gr.Textbox("", label="alpha in [0, 1] (empty: the preset's)", max_lines=1)
            fss = gr.Dropdown(list(FSS_CHOICES), value="linear_cka", label="fss_method")
            aoag = gr.Dropdown(list(AOAG_CHOICES), value="auto", label="aoag_method")
            temperature = gr.Number(1.0, label="temperature", minimum=0.01)
        button = gr.Button("Compute", variant="primary")
        error = gr.Markdown("", elem_id="krs-widget-error")
        output = gr.JSON(label="knowledge_retention")
        button.click(on_compute, inputs=[table, task, alpha, fss, aoag, temperature], outputs=[output, error])
        gr.Markdown(card)
    return demo


def _smoke(demo: Any) -> None:
    """``KRS_WIDGET_SMOKE=1``: the server answers, the example table computes; prints the result and stops."""
    import urllib.request

    import pandas as pd

    try:
        with urllib.request.urlopen(demo.local_url, timeout=30) as response:  # noqa: S310 - our localhost server
            status = response.status
        served_before_evaluate = "evaluate" not in sys.modules  # nothing heavy happens before the page is up
        result, error = on_compute(pd.DataFrame(EXAMPLE_ROWS, columns=list(INPUT_NAMES)), "nlp", "", "linear_cka",
                                   "auto", 1.0)
        print(json.dumps({"status": status, "served_before_evaluate": served_before_evaluate, "result": result,
                          "error": error,
                          "knowledge_retention_importable": _importable("knowledge_retention")}))
    finally:
        demo.close()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def main() -> None:
    demo = build_widget()
    smoke = bool(os.environ.get("KRS_WIDGET_SMOKE"))
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME") or ("127.0.0.1" if smoke else None),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
        prevent_thread_lock=True,
    )
    if smoke:
        _smoke(demo)
        return
    threading.Thread(target=load_module, daemon=True).start()  # evaluate and the metric, after the page is up
    demo.block_thread()


if __name__ == "__main__":
    main()
