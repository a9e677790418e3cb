"""Knowledge Retention Score: the Hugging Face Space.

Two tabs:

* **Bring your own arrays**: upload teacher/student features and logits (``.npz``, ``.npy``,
  ``.safetensors``; pickles are refused), get KRS, FSS, AOAg, task-quality retention, the
  cross-layer CKA heatmap and the α-sensitivity curve; the α slider re-weights KRS live.
* **Compare models**: a teacher/student pair of ``transformers`` classifiers on sentences
  (typed, or a sample of SST-2 dev), through ``knowledge_retention.extraction``.

Every number comes from the ``knowledge_retention`` package; this file only lays out the page.
Run ``python spaces_app/app.py`` (port from ``$PORT`` / ``$GRADIO_SERVER_PORT``, default 7860).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # helper modules sit next to this file (the Space's root)
    sys.path.insert(0, str(HERE))
try:
    import knowledge_retention  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent))

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import space_compare  # noqa: E402
from space_io import (  # noqa: E402
    MAX_UPLOAD_BYTES,
    InputError,
    parse_arrays,
    read_array_files,
    synthetic_example,
)
from space_plots import AlphaCurve, alpha_curve, cka_heatmap_figure  # noqa: E402
from space_results import (  # noqa: E402
    AOAG_CHOICES,
    FSS_CHOICES,
    TASK_CHOICES,
    ScoreResult,
    heatmap_caption,
    preset_alpha,
    score_arrays,
    summary_markdown,
    with_task,
)

logger = logging.getLogger("knowledge_retention.space")
F = TypeVar("F", bound=Callable[..., Any])

TITLE = "Knowledge Retention Score (KRS)"
INTRO = """\
# Knowledge Retention Score (KRS)
How much of its teacher did a distilled student keep? **KRS = α·FSS + β·AOAg** (β = 1 − α), all in
[0, 1], higher is better (Alba & Villaverde, 2025). **FSS** compares the two models' hidden features
of the same examples (linear CKA by default: 1 = the same representation up to rotation and scale);
**AOAg** compares their outputs (for classifiers, the mean of exp(−KL) between their softmax outputs).
"""

FORMAT_HELP = f"""\
Upload **one `.npz` or `.safetensors` file** holding the arrays below by name, **or several `.npy`
files named after their key** (`teacher_features.npy`, ...). Up to {MAX_UPLOAD_BYTES / 1024**2:.0f} MB.
Pickles (`.pkl`, `.pt`, object arrays) are refused.

| key | shape | needed |
|---|---|---|
| `teacher_features` | `(N, D_t)` one layer, or `(N, L, D_t)` for L layers | required |
| `student_features` | `(N, D_s)` or `(N, L, D_s)`; layer *l* is paired with teacher layer *l* | required |
| `teacher_logits` | `(N, C)` logits; regression `(N,)` or `(N, K)`; segmentation `(N, H, W)` (alias `teacher_outputs`) | required |
| `student_logits` | the teacher's layout (alias `student_outputs`) | required |
| `labels` | `(N,)` class ids (regression: targets): accuracy retention | optional |
| `layer_map` | `(L_s,)` ints: the teacher layer of each student layer | optional |

Layers of different widths: numbered keys `teacher_features_0`, `teacher_features_1`, ...

```python
np.savez(
    "pair.npz",
    teacher_features=t_feats,
    student_features=s_feats,
    teacher_logits=t_logits,
    student_logits=s_logits,
    labels=y,
)
```
"""

CSS = """
.krs-status p { margin: 0; }
.krs-error { border-left: 4px solid #d62728; padding: 0.4em 0.8em; background: rgba(214, 39, 40, 0.08); }
.krs-ok { border-left: 4px solid #2ca02c; padding: 0.4em 0.8em; background: rgba(44, 160, 44, 0.08); }
.krs-format table { table-layout: auto; width: 100%; }
.krs-format td, .krs-format th { word-break: normal !important; overflow-wrap: normal !important; }
.krs-format td:first-child, .krs-format td:last-child, .krs-format th { white-space: nowrap; }
.krs-format pre, .krs-format pre code { white-space: pre; overflow-x: auto; max-width: 100%; }
#arrays-summary td:nth-child(2), #models-summary td:nth-child(2) { white-space: nowrap; }
.krs-alpha-figure svg { display: block; max-width: 100%; }
#models-teacher input, #models-student input { text-overflow: ellipsis; }
ul.options li { white-space: normal !important; }
.krs-students { overflow-x: auto; }
.krs-students table { font-size: 0.85em; width: 100%; }
.krs-students th, .krs-students td { padding: 4px 6px !important; }
"""

_TASK_LABELS = [(f"{task} (α = {preset_alpha(task):.1f}, β = {1 - preset_alpha(task):.1f})", task)
                for task in TASK_CHOICES]
_TASK_VALUES = frozenset(TASK_CHOICES)
_AOAG_LABELS = [("auto (the task's default)" if m == "auto" else m, m) for m in AOAG_CHOICES]
_LAYER_LABELS = [("final layers (as the report)", "final"), ("uniform map (PKD / TinyBERT)", "uniform"),
                 ("all hidden states", "all")]
#: Shown for any error that is not the visitor's input: the details go to the server log only.
UNEXPECTED = "Something went wrong on the server while computing; the details are in its log."


@dataclass(frozen=True)
class Shown:
    """What a tab keeps between events: the scores and the α curve drawn once (the slider only moves its dot)."""

    result: ScoreResult
    curve: AlphaCurve | None


def _error_status(message: str) -> str:
    return f"**Error — could not compute.** {message}"


def _ok_status(message: str) -> str:
    return f"**Done.** {message}"


def _empty_outputs(status: str, *, error: bool = True) -> tuple[Any, ...]:
    """Outputs for a failed run (or a new upload): status shown, previous results cleared."""
    return (
        None,
        gr.Markdown(status, elem_classes=["krs-status", "krs-error"] if error else ["krs-status"]),
        "",
        gr.HTML(value="", visible=False),
        gr.Plot(value=None, visible=False),
        gr.Markdown("", visible=False),
    )


def _curve(result: ScoreResult) -> AlphaCurve | None:
    if result.aoag is None:
        return None
    return alpha_curve(result.fss, result.aoag, preset_alpha=preset_alpha(result.task), preset_name=result.task)


def _result_outputs(result: ScoreResult, alpha: float, status: str) -> tuple[Any, ...]:
    shown = Shown(result, _curve(result))
    heatmap = (
        gr.Plot(
            value=cka_heatmap_figure(result.cka, teacher_names=result.teacher_names,
                                     student_names=result.student_names, paired=result.paired,
                                     method=result.fss_method),
            visible=True,
        )
        if result.cka is not None
        else gr.Plot(value=None, visible=False)
    )
    caption = heatmap_caption(result)
    return (
        shown,
        gr.Markdown(status, elem_classes=["krs-status", "krs-ok"]),
        summary_markdown(result, alpha),
        _alpha_html(shown, alpha),
        heatmap,
        gr.Markdown(caption, visible=bool(caption)),
    )


def _alpha_html(shown: Shown, alpha: float) -> Any:
    """The α-curve component: the stored figure with its dot at α, or hidden without AOAg (FSS only)."""
    if shown.curve is None:
        return gr.HTML(value="", visible=False)
    return gr.HTML(value=shown.curve.html(float(alpha)), visible=True)


def guarded(function: F, *, empty: Callable[[str], tuple[Any, ...]] | None = None) -> F:
    """Turns any exception of a callback into a status message: the page never shows a stack trace.

    ``empty`` builds the callback's outputs for a failed run (default: the score tabs' :func:`_empty_outputs`).
    """
    cleared = empty or _empty_outputs

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (InputError, ValueError, TypeError) as err:  # the package words these for a person
            logger.info("input rejected: %s", err)
            return cleared(_error_status(str(err)))
        except MemoryError:  # a damaged file's header can declare arrays far larger than the file itself
            return cleared(_error_status(
                "The arrays do not fit in this Space's memory. A damaged or hand-edited file can declare arrays far "
                "larger than the file itself: check that it opens with numpy.load. Otherwise use fewer examples or "
                "narrower features."))
        except Exception:  # noqa: BLE001 - last resort: the visitor sees a sentence, the log the trace
            logger.exception("unexpected error in %s", function.__name__)
            return cleared(_error_status(UNEXPECTED))

    return wrapper  # type: ignore[return-value]


def _file_paths(files: Any) -> list[str]:
    """Paths of what ``gr.File(file_count="multiple")`` hands over (paths, or objects with ``.name``)."""
    if files is None:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    return [str(getattr(item, "name", item)) for item in items if item]


@guarded
def run_arrays(
    files: Any, task: str, alpha: float, fss_method: str, aoag_method: str, temperature: float
) -> tuple[Any, ...]:
    """Callback of "Compute KRS": read, validate, score, draw."""
    paths = _file_paths(files)
    inputs = parse_arrays(read_array_files(paths))
    names = ", ".join(Path(p).name for p in paths)
    result = score_arrays(inputs, task=task, alpha=float(alpha), fss_method=fss_method, aoag_method=aoag_method,
                          temperature=float(temperature), source=f"{names}: {inputs.describe()}")
    return _result_outputs(result, alpha, _ok_status(f"Scored {names}."))


def uploaded(files: Any) -> tuple[Any, ...]:
    """Callback of a new upload (or a cleared box): the old result and any old error go."""
    names = [Path(p).name for p in _file_paths(files)]
    if not names:
        return _empty_outputs(ARRAYS_PLACEHOLDER, error=False)
    listing = ", ".join(f"`{name}`" for name in names)
    return _empty_outputs(f"Uploaded {listing}: press **Compute KRS**.", error=False)


def update_alpha(shown: Shown | None, alpha: float) -> tuple[Any, Any]:
    """Callback of the α slider: KRS and the curve's dot from the stored FSS/AOAg (nothing recomputed or redrawn)."""
    if shown is None:
        return gr.skip(), gr.skip()
    return summary_markdown(shown.result, alpha), _alpha_html(shown, alpha)


def rescore_arrays(
    shown: Shown | None, files: Any, task: str, fss_method: str, aoag_method: str, temperature: float
) -> tuple[Any, ...]:
    """Callback of a preset change on the arrays tab: α moves to the preset's, and a shown result is
    scored again under the new preset (its AOAg measure may differ)."""
    alpha = preset_alpha(task)
    if shown is None:
        return (alpha, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
    return (alpha, *run_arrays(files, task, alpha, fss_method, aoag_method, temperature))


def retask_models(shown: Shown | None, task: str) -> tuple[Any, ...]:
    """Callback of a preset change on the models tab: α moves to the preset's; the shown result is
    relabelled (nlp and classification both use KL agreement, so FSS and AOAg stand)."""
    alpha = preset_alpha(task)
    if shown is None:
        return alpha, gr.skip(), gr.skip(), gr.skip()
    result = with_task(shown.result, task)
    new = Shown(result, _curve(result))
    return alpha, new, summary_markdown(result, alpha), _alpha_html(new, alpha)


def show_task(shown: Shown | None, task: str) -> Any:
    """After "Compare models": the preset dropdown names the task the shown result was scored with (a
    causal-LM pair is scored as causal-lm whatever the preset was); unchanged otherwise."""
    if shown is None or shown.result.task == task or shown.result.task not in _TASK_VALUES:
        return gr.skip()
    return gr.Dropdown(choices=_TASK_LABELS, value=shown.result.task)  # choices too: an update without them warns


def example_file() -> list[str]:
    """Writes the synthetic example (built in memory) to a temporary ``.npz`` shown in the upload box."""
    directory = Path(tempfile.mkdtemp(prefix="krs_example_"))
    path = directory / "synthetic_example.npz"
    np.savez(path, **synthetic_example())  # type: ignore[arg-type]
    return [str(path)]


@guarded
def run_models(
    teacher: str | None,
    student: str | None,
    text_source: str,
    sample_size: float,
    sentences: str,
    task: str,
    alpha: float,
    layers: str,
    fss_method: str,
    aoag_method: str,
    temperature: float,
    images: str = "",
    progress: gr.Progress = gr.Progress(),  # noqa: B008 - gradio's documented idiom
) -> tuple[Any, ...]:
    """Callback of "Compare models": run both models on the texts (or the images of ``images``, an image
    folder, for image classifiers) through ``knowledge_retention.extraction``."""
    images = (images or "").strip()
    if images:
        texts, labels, origin = [], None, f"the images of {images}"
    else:
        texts, labels, origin = space_compare.texts_for(text_source, sentences, int(sample_size))
    choices = MODEL_CHOICES
    teacher, student = _model_path(teacher), _model_path(student)
    result = space_compare.compare_models(
        teacher, student, texts, labels, task=task, alpha=float(alpha), layers=layers, fss_method=fss_method,
        aoag_method=aoag_method, temperature=float(temperature), source=origin, choices=choices,
        progress=lambda fraction, message: progress(fraction, desc=message), images=images or None,
    )
    teacher_name = space_compare.display_name(str(teacher), choices)
    student_name = space_compare.display_name(str(student), choices)
    return _result_outputs(result, alpha, _ok_status(f"Compared the teacher {teacher_name} with the student "
                                                     f"{student_name} on {origin}."))


def _empty_students(status: str) -> tuple[Any, ...]:
    """Outputs of a failed several-students run: the status shown, the table and figures cleared."""
    return (
        gr.Markdown(status, elem_classes=["krs-status", "krs-error"]),
        gr.Markdown("", visible=False),
        gr.Image(value=None, visible=False),
        gr.Image(value=None, visible=False),
    )


def run_students(
    teacher: str | None,
    students: Sequence[str] | None,
    text_source: str,
    sample_size: float,
    sentences: str,
    task: str,
    alpha: float,
    layers: str,
    verdict: str,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 - gradio's documented idiom
) -> tuple[Any, ...]:
    """Callback of "Compare students": several students against the teacher, the report's table and front."""
    texts, labels, origin = space_compare.texts_for(text_source, sentences, int(sample_size))
    out = space_compare.compare_students(
        _model_path(teacher), [_model_path(s) or "" for s in students or []], texts, labels, task=task,
        alpha=float(alpha), layers=layers, verdict=verdict, choices=MODEL_CHOICES,
        progress=lambda fraction, message: progress(fraction, desc=message),
    )
    figures = out["figures"]
    best = out["report"]["best"]
    front = ", ".join(out["report"]["pareto"].get("size") or []) or "—"
    three = (out["report"].get("three_way") or {}).get("sentence")
    status = _ok_status(f"Compared {len(out['report']['students'])} students with the teacher "
                        f"{space_compare.display_name(str(_model_path(teacher)), MODEL_CHOICES)} on {origin}. "
                        f"Best KRS: {best}; on the size front: {front}." + (f" {three}" if three else ""))
    return (
        gr.Markdown(status, elem_classes=["krs-status", "krs-ok"]),
        gr.Markdown(out["table"], visible=True),
        gr.Image(value=figures.get("tradeoff_front"), visible="tradeoff_front" in figures),
        gr.Image(value=figures.get("accuracy_vs_krs"), visible="accuracy_vs_krs" in figures),
    )


run_students = guarded(run_students, empty=_empty_students)


def _model_path(choice: str | None) -> str | None:
    """The folder behind a dropdown label (the page shows names only, never the server's paths); a typed
    value (only when ``KRS_ALLOW_CUSTOM_MODELS`` is set) is passed on as it is, to be checked."""
    for label, path in MODEL_CHOICES:
        if choice == label:
            return path
    return choice


def _label_of(path: str | None) -> str | None:
    return next((label for label, listed in MODEL_CHOICES if listed == path), None)


def _options(prefix: str, default_task: str) -> tuple[Any, Any, Any, Any, Any]:
    """Task preset, α slider and the advanced options (FSS, AOAg, temperature)."""
    task = gr.Dropdown(_TASK_LABELS, value=default_task, label="Task preset (sets α, β and the default AOAg)",
                       elem_id=f"{prefix}-task")
    alpha = gr.Slider(0.0, 1.0, value=preset_alpha(default_task), step=0.01, label="α: weight on FSS (β = 1 − α)",
                      info="After computing, moving α updates KRS and the curve instantly (FSS and AOAg are kept).",
                      elem_id=f"{prefix}-alpha")
    with gr.Accordion("Advanced: FSS / AOAg measures, temperature", open=False):
        fss = gr.Dropdown(list(FSS_CHOICES), value="linear_cka", label="FSS method (also the heatmap's)",
                          elem_id=f"{prefix}-fss")
        aoag = gr.Dropdown(_AOAG_LABELS, value="auto", label="AOAg method", elem_id=f"{prefix}-aoag")
        temperature = gr.Number(1.0, label="Softmax temperature (kl / js)", minimum=0.01,
                                elem_id=f"{prefix}-temperature")
    return task, alpha, fss, aoag, temperature


def _results_column(prefix: str, placeholder: str) -> tuple[Any, Any, Any, Any, Any]:
    status = gr.Markdown(placeholder, elem_id=f"{prefix}-status", elem_classes=["krs-status"])
    summary = gr.Markdown("", elem_id=f"{prefix}-summary", min_height=60)
    curve = gr.HTML("", visible=False, elem_id=f"{prefix}-alpha-plot")
    heatmap = gr.Plot(label="Cross-layer similarity", show_label=False, visible=False, elem_id=f"{prefix}-heatmap")
    caption = gr.Markdown("", visible=False, elem_id=f"{prefix}-heatmap-caption")
    return status, summary, curve, heatmap, caption


ARRAYS_PLACEHOLDER = "Upload arrays (or press **Load example**), then press **Compute KRS**."
#: The models offered, found once when the Space starts (the cached default pair included).
MODEL_CHOICES: list[tuple[str, str]] = []


def build_demo() -> gr.Blocks:
    """The Space's page (not launched)."""
    MODEL_CHOICES[:] = space_compare.model_choices(include_default_pair=True)
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Bring your own arrays", id="arrays"):
            arrays_state = gr.State(None)
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=360):
                    files = gr.File(
                        file_count="multiple",
                        label=".npz / .safetensors (or .npy per key), teacher & student features and logits",
                        elem_id="arrays-upload",
                        height=360,
                    )
                    with gr.Row():
                        example_button = gr.Button("Load example", elem_id="arrays-example", size="sm")
                    task, alpha, fss, aoag, temperature = _options("arrays", "classification")
                    run_button = gr.Button("Compute KRS", variant="primary", elem_id="arrays-run")
                with gr.Column(scale=3, min_width=420):
                    status, summary, curve, heatmap, caption = _results_column("arrays", ARRAYS_PLACEHOLDER)
            # Full width: the key / shape table and the code example need the room.
            with gr.Accordion("File format (keys and shapes)", open=False, elem_id="arrays-format"):
                gr.Markdown(FORMAT_HELP, elem_classes=["krs-format"])
            result_outputs = [arrays_state, status, summary, curve, heatmap, caption]
            option_inputs = [task, alpha, fss, aoag, temperature]
            run_button.click(run_arrays, inputs=[files, *option_inputs], outputs=result_outputs,
                             concurrency_limit=2, show_progress_on=[summary])
            example_button.click(example_file, outputs=files).then(
                run_arrays, inputs=[files, *option_inputs], outputs=result_outputs, show_progress_on=[summary]
            )
            files.upload(uploaded, inputs=files, outputs=result_outputs, show_progress="hidden")
            files.clear(uploaded, inputs=files, outputs=result_outputs, show_progress="hidden")
            alpha.change(update_alpha, inputs=[arrays_state, alpha], outputs=[summary, curve],
                         show_progress="hidden", trigger_mode="always_last", queue=False)
            task.change(rescore_arrays, inputs=[arrays_state, files, task, fss, aoag, temperature],
                        outputs=[alpha, *result_outputs], show_progress="hidden")

        with gr.Tab("Compare models", id="models"):
            models_state = gr.State(None)
            gr.Markdown(space_compare.TAB_HELP)
            custom = space_compare.custom_models_allowed()
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=360):
                    labels = [label for label, _ in MODEL_CHOICES]  # values are names: no server path on the page
                    hint = "pick from the list, or type a local path / hub name" if custom else "models this Space offers"
                    teacher = gr.Dropdown(labels, value=_label_of(space_compare.default_teacher(MODEL_CHOICES)),
                                          allow_custom_value=custom, label="Teacher", info=hint,
                                          elem_id="models-teacher")
                    student = gr.Dropdown(labels, value=_label_of(space_compare.default_student(MODEL_CHOICES)),
                                          allow_custom_value=custom, label="Student", info=hint,
                                          elem_id="models-student")
                    layers = gr.Dropdown(_LAYER_LABELS, value="final", label="Layer pairs averaged into FSS",
                                         elem_id="models-layers")
                    sources = space_compare.text_sources()
                    text_source = gr.Radio(sources, value=sources[0], label="Texts")
                    sample_size = gr.Slider(8, space_compare.MAX_SAMPLE, value=64, step=8,
                                            label="SST-2 dev sample size", visible=sources[0] == space_compare.SOURCE_SST2)
                    sentences = gr.Textbox(lines=5, label="My sentences (one per line; optional TAB + label 0/1)",
                                           placeholder=space_compare.SENTENCE_PLACEHOLDER, visible=False,
                                           elem_id="models-sentences")
                    images = gr.Textbox(label="Image folder (image classifiers: its images replace the texts)",
                                        placeholder="a folder on this server with one subfolder per class",
                                        elem_id="models-images")
                    m_task, m_alpha, m_fss, m_aoag, m_temperature = _options("models", "nlp")
                    compare_button = gr.Button("Compare models", variant="primary", elem_id="models-run")
                with gr.Column(scale=3, min_width=420):
                    m_status, m_summary, m_curve, m_heatmap, m_caption = _results_column(
                        "models", space_compare.availability_message()
                    )
            text_source.change(
                lambda source: (gr.Slider(visible=source != space_compare.SOURCE_TYPED),
                                gr.Textbox(visible=source == space_compare.SOURCE_TYPED)),
                inputs=text_source, outputs=[sample_size, sentences], show_progress="hidden",
            )
            with gr.Accordion("Several students against the teacher", open=False, elem_id="models-students-box"):
                gr.Markdown(space_compare.STUDENTS_HELP)
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=360):
                        many = gr.Dropdown(labels, value=[], multiselect=True, max_choices=space_compare.MAX_STUDENTS,
                                           label="Students", elem_id="models-students")
                        verdict = gr.Dropdown(list(space_compare.VERDICT_PRESETS), value="default",
                                              label="Verdict rule (preset)", elem_id="models-verdict")
                        students_button = gr.Button("Compare students", variant="primary",
                                                    elem_id="models-students-run")
                    with gr.Column(scale=3, min_width=420):
                        s_status = gr.Markdown("Pick two or more students, then press **Compare students**.",
                                               elem_id="models-students-status", elem_classes=["krs-status"])
                s_table = gr.Markdown("", visible=False, elem_id="models-students-table", elem_classes=["krs-students"])
                s_front = gr.Image(visible=False, show_label=False, elem_id="models-students-front", type="filepath",
                                   height=460)
                s_scatter = gr.Image(visible=False, show_label=False, elem_id="models-students-scatter", type="filepath",
                                     height=440)
            students_button.click(
                run_students,
                inputs=[teacher, many, text_source, sample_size, sentences, m_task, m_alpha, layers, verdict],
                outputs=[s_status, s_table, s_front, s_scatter], concurrency_limit=1, show_progress_on=[s_status],
                api_name="compare_students",
            )
            compare_button.click(
                run_models,
                inputs=[teacher, student, text_source, sample_size, sentences, m_task, m_alpha, layers, m_fss, m_aoag,
                        m_temperature, images],
                outputs=[models_state, m_status, m_summary, m_curve, m_heatmap, m_caption],
                concurrency_limit=1, show_progress_on=[m_summary], api_name="compare_models",
            ).then(show_task, inputs=[models_state, m_task], outputs=m_task, show_progress="hidden", queue=False)
            m_alpha.change(update_alpha, inputs=[models_state, m_alpha], outputs=[m_summary, m_curve],
                           show_progress="hidden", trigger_mode="always_last", queue=False)
            m_task.change(retask_models, inputs=[models_state, m_task], outputs=[m_alpha, models_state, m_summary, m_curve],
                          show_progress="hidden")
    return demo


demo = build_demo()


def main(argv: Sequence[str] | None = None) -> None:
    """Launches the Space on ``0.0.0.0:$PORT`` (or ``$GRADIO_SERVER_PORT``, default 7860)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    port = int(os.environ.get("PORT", os.environ.get("GRADIO_SERVER_PORT", 7860)))
    demo.queue(default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=port,
        max_file_size=MAX_UPLOAD_BYTES,
        css=CSS,
        footer_links=["api", "gradio"],
    )


if __name__ == "__main__":
    main()
