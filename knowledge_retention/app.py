"""The metric's widget: what the Hub runs as ``app.py`` next to ``knowledge_retention.py``.

The standard evaluate widget is ``launch_gradio_widget(evaluate.load(...))``. With gradio >= 4 it
cannot start: ``evaluate.utils.gradio.launch_gradio_widget`` (evaluate 0.4.6) builds its table with
``gr.inputs.Dataframe`` and ``gr.outputs.Textbox``, removed in gradio 4 (``AttributeError: module
'gradio' has no attribute 'inputs'``). This file is the same widget written against the current
API: the metric is still loaded with ``evaluate.load`` and computed with ``module.compute``, and
evaluate's own helpers parse the table (one JSON list per cell, as evaluate's widget expects for
nested features) and the README. It adds the metric's options (task preset, α, methods,
temperature) and shows errors as messages, not stack traces.

Run: ``python knowledge_retention/app.py`` (port ``$GRADIO_SERVER_PORT``, default 7860).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Running this file puts its folder first on sys.path; there `import knowledge_retention` would
# find the metric *script* knowledge_retention.py instead of the package that script imports. Keep
# the folder only when the package is vendored inside it (a Space: `knowledge_retention/` beside
# the script; a package directory wins over a module of the same name).
if not (HERE / "knowledge_retention" / "__init__.py").is_file():
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
try:
    import knowledge_retention  # noqa: F401
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent))

import evaluate  # noqa: E402
import gradio as gr  # noqa: E402
from evaluate.utils.gradio import (  # noqa: E402
    infer_gradio_input_types,
    json_to_string_type,
    parse_gradio_data,
    parse_readme,
)

from knowledge_retention.score import TASK_PRESETS  # noqa: E402
from knowledge_retention.similarity import FSS_METHODS  # noqa: E402

#: A 4-example table (teacher width 3, student width 2, 2 classes) that fills the widget.
EXAMPLE_ROWS: list[list[str]] = [
    ["[1.0, 0.2, -0.5]", "[0.9, 0.1]", "[2.0, -1.0]", "[1.5, -0.8]"],
    ["[0.3, -1.2, 0.8]", "[0.4, -1.0]", "[-0.5, 1.5]", "[-0.2, 1.1]"],
    ["[-0.7, 0.5, 0.1]", "[-0.6, 0.6]", "[0.3, 0.2]", "[0.1, 0.4]"],
    ["[0.9, 0.9, -1.1]", "[1.0, 0.7]", "[1.2, -0.4]", "[1.0, -0.1]"],
]
_TASKS = [t for t in TASK_PRESETS if t != "detection"]  # ragged boxes do not fit a table
_AOAG = ["auto", "kl", "js", "top1", "mse", "mask_iou"]


def load_module() -> evaluate.EvaluationModule:
    """``evaluate.load`` of the script beside this file (works in the repository and in a metric Space)."""
    return evaluate.load(str(HERE / "knowledge_retention.py"))


def compute_from_table(
    module: evaluate.EvaluationModule,
    data: Any,
    task: str,
    alpha: str | float | None,
    fss_method: str,
    aoag_method: str,
    temperature: float,
) -> dict[str, Any]:
    """Parses the widget's table with evaluate's helper and calls ``module.compute``.

    Raises:
        gradio.Error: with the metric's message when the inputs are invalid.
    """
    if alpha is None or (isinstance(alpha, str) and not alpha.strip()):
        alpha = None
    else:
        try:
            alpha = float(alpha)
        except ValueError:
            raise gr.Error(f"alpha must be a number in [0, 1] or empty, got {alpha!r}.") from None
    feature_types = list(module.features.values())
    input_types = infer_gradio_input_types(feature_types)
    try:
        inputs = parse_gradio_data(data, input_types)
    except (ValueError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise gr.Error(f"Each cell must be a JSON list of numbers, e.g. [0.1, -2.0]: {err}") from None
    try:
        return module.compute(
            **inputs,
            task=task,
            alpha=alpha,
            fss_method=fss_method,
            aoag_method=None if aoag_method == "auto" else aoag_method,
            temperature=float(temperature),
        )
    except (ValueError, TypeError) as err:
        raise gr.Error(str(err)) from None


def build_widget(module: evaluate.EvaluationModule) -> gr.Blocks:
    """The widget: a table of per-example JSON lists, the metric's options, the result as JSON."""
    names = list(module.features)
    input_types = infer_gradio_input_types(list(module.features.values()))
    with gr.Blocks(title=f"Metric: {module.name}") as demo:
        gr.Markdown(f"# Metric: {module.name}\n\n{module.info.description}")
        gr.Markdown(
            "One row per example; each cell is a JSON list: the pooled feature vector of each model "
            "(`[[...], [...]]` for several layers) and its logits. Teacher and student widths may differ."
        )
        table = gr.Dataframe(
            value=EXAMPLE_ROWS,
            headers=names,
            column_count=len(names),
            datatype=json_to_string_type(input_types),
            interactive=True,
            label="examples",
        )
        with gr.Row():
            task = gr.Dropdown(_TASKS, value="classification", label="task preset")
            alpha = gr.Textbox("", label="alpha in [0, 1] (empty: the preset's)", max_lines=1)
            fss = gr.Dropdown(list(FSS_METHODS), value="linear_cka", label="fss_method")
            aoag = gr.Dropdown(_AOAG, value="auto", label="aoag_method")
            temperature = gr.Number(1.0, label="temperature", minimum=0.01)
        button = gr.Button("Compute", variant="primary")
        output = gr.JSON(label=module.name)
        button.click(
            lambda *args: compute_from_table(module, *args),
            inputs=[table, task, alpha, fss, aoag, temperature],
            outputs=output,
        )
        gr.Markdown(parse_readme(HERE / "README.md"))
    return demo


if __name__ == "__main__":
    build_widget(load_module()).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
    )
