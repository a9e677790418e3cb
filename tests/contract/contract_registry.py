"""The contract suite's two registries: entry points, and the case type every ``cases_*.py`` file fills.

A :class:`Case` is one input (arrays, options, or a file) and what must come out of it: either a
refusal by the package's own error (:class:`~knowledge_retention.InputError` / ``InputTypeError``, or
exit code 2 with one line on the command line) whose message matches ``refused`` (the argument or flag
it names), or a result equal to ``reference`` (an independent computation: naive Gram-matrix CKA,
scipy/sklearn agreement), to ``rel``.

An entry point is a function ``run(case, tmp_path) -> dict`` that feeds the case to one front end and
returns ``{"fss", "aoag", "krs"}`` (the Space returns no ``krs``), letting the front end's own errors
through; :data:`ENTRY_POINTS` lists this file's. A cases file may add its own in a dict named
``ENTRY_POINTS`` (see README.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon, pdist, squareform
from scipy.special import log_softmax, rel_entr, softmax

import knowledge_retention
from knowledge_retention import InputError, KRSAccumulator, combine_krs, compute_krs
from knowledge_retention.agreement import output_agreement
from knowledge_retention.score import DEFAULT_AOAG, TASK_PRESETS
from knowledge_retention.similarity import feature_similarity_score

SPACE = Path(__file__).resolve().parents[2] / "spaces_app"
INPUTS = ("teacher_features", "student_features", "teacher_outputs", "student_outputs")

#: The array entry points of this file, in the order the tally lists them.
ARRAY_ENTRIES = ("compute_krs", "functions", "accumulator", "evaluate", "cli", "space")


@dataclass(frozen=True)
class Case:
    """One input and the outcome every entry point in ``entries`` must give for it.

    Attributes:
        name: short id (unique within its file).
        data: builds the four inputs (``{"teacher_features": ..., ...}``), called once per run.
        options: keyword options as ``compute_krs`` takes them.
        refused: a regex the package's error message must match (naming the argument or flag); None when
            a result is expected.
        reference: ``(data, options) -> {"fss", "aoag"}`` computed independently; KRS follows from the
            task's weights. Required when ``refused`` is None.
        rel: relative tolerance of the comparison with ``reference``.
        entries: the entry points that take this input (an entry that cannot express it is left out).
        file: for file cases, ``(tmp_path) -> path`` of the file handed to the CLI and the Space.
    """

    name: str
    data: Callable[[], dict[str, Any]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    refused: str | None = None
    reference: Callable[[dict[str, Any], dict[str, Any]], dict[str, float]] | None = None
    rel: float = 1e-9
    entries: tuple[str, ...] = ARRAY_ENTRIES
    file: Callable[[Path], Path] | None = None

    @property
    def kind(self) -> str:
        return "refused" if self.refused is not None else "scored"


# ---- independent references -------------------------------------------------------------------------------------


def _layers(value: Any) -> list[np.ndarray]:
    if isinstance(value, (list, tuple)):
        return [np.asarray(v, dtype=np.float64) for v in value]
    array = np.asarray(value, dtype=np.float64)
    return [array] if array.ndim == 2 else [array[:, i] for i in range(array.shape[1])]


def _hsic(k: np.ndarray, l: np.ndarray, debiased: bool) -> float:  # noqa: E741
    n = k.shape[0]
    if not debiased:
        h = np.eye(n) - 1.0 / n
        return float(np.trace(k @ h @ l @ h))
    k, l = k.copy(), l.copy()  # noqa: E741
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    return float(np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
                 - 2.0 / (n - 2) * (one @ k @ l @ one))


def naive_cka(x: np.ndarray, y: np.ndarray, kernel: str = "linear", debiased: bool = False) -> float:
    """CKA from explicit Gram matrices and the centring matrix H (no shortcut of the package's)."""
    if kernel == "rbf":
        grams = []
        for z in (x, y):
            sq = squareform(pdist(z, "sqeuclidean"))
            grams.append(np.exp(-sq / (2 * np.median(sq))))
        k, l = grams  # noqa: E741
    else:
        k, l = x @ x.T, y @ y.T  # noqa: E741
    return _hsic(k, l, debiased) / np.sqrt(_hsic(k, k, debiased) * _hsic(l, l, debiased))


def reference_fss(teacher: Any, student: Any, method: str = "linear_cka") -> float:
    scores = []
    for x, y in zip(_layers(teacher), _layers(student), strict=True):
        if method == "cosine":
            value = np.mean(np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1))
            scores.append(max(0.0, float(value)))
        else:
            value = naive_cka(x, y, "rbf" if method == "rbf_cka" else "linear", debiased=method == "debiased_cka")
            scores.append(min(max(value, 0.0), 1.0))
    return float(np.mean(scores))


def reference_aoag(teacher: Any, student: Any, method: str, *, temperature: float = 1.0, inputs: str = "logits",
                   max_mse: float | None = None, ignore_index: int | None = None) -> float:
    t, s = np.asarray(teacher, dtype=np.float64), np.asarray(student, dtype=np.float64)
    if method in ("kl", "js", "top1"):
        if inputs == "probabilities":
            t, s = np.log(t), np.log(s)
        p, q = softmax(t / temperature, axis=1), softmax(s / temperature, axis=1)
        if method == "kl":  # in log space: p log(p/q) of a p that underflows is 0, not 0 * inf
            log_p, log_q = log_softmax(t / temperature, axis=1), log_softmax(s / temperature, axis=1)
            kl = np.sum(np.where(p > 0, p * (log_p - log_q), 0.0), axis=1) if temperature < 0.1 else np.sum(rel_entr(p, q), axis=1)
            return float(np.mean(np.exp(-kl)))
        if method == "js":
            return float(1 - np.mean(jensenshannon(p, q, axis=1, base=2) ** 2))
        return float(np.mean(np.argmax(p, 1) == np.argmax(q, 1)))
    if method == "mse":
        t, s = t.reshape(len(t), -1), s.reshape(len(s), -1)
        worst = max_mse if max_mse is not None else float(np.mean(np.var(t, axis=0)))
        return float(np.clip(1 - np.mean((t - s) ** 2) / worst, 0, 1))
    from sklearn.metrics import jaccard_score

    t, s = t.ravel(), s.ravel()
    if ignore_index is not None:
        keep = (t != ignore_index) & (s != ignore_index)
        t, s = t[keep], s[keep]
    return float(jaccard_score(t.astype(np.int64), s.astype(np.int64), average="macro"))


def reference(data: dict[str, Any], options: dict[str, Any]) -> dict[str, float]:
    """FSS and AOAg of ``data`` by the naive references, with ``options`` as compute_krs reads them."""
    task = options.get("task", "classification")
    method = options.get("aoag_method") or DEFAULT_AOAG[task]
    return {
        "fss": reference_fss(data["teacher_features"], data["student_features"], options.get("fss_method", "linear_cka")),
        "aoag": reference_aoag(data["teacher_outputs"], data["student_outputs"], method,
                               temperature=options.get("temperature", 1.0), inputs=options.get("inputs", "logits"),
                               max_mse=options.get("max_mse"), ignore_index=options.get("ignore_index")),
    }


def reference_on(transform_back: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., dict[str, float]]:
    """A reference computed on other data: the case's data mapped back (e.g. unscaled: CKA is scale invariant)."""
    return lambda data, options: reference(transform_back(data), options)


def expected_krs(values: dict[str, float], options: dict[str, Any]) -> float:
    alpha, beta = options.get("alpha"), options.get("beta")
    if alpha is None and beta is None:
        alpha, beta = TASK_PRESETS[options.get("task", "classification")]
    alpha = float(alpha) if alpha is not None else 1.0 - float(beta)  # type: ignore[arg-type]
    beta = float(beta) if beta is not None else 1.0 - alpha
    return options.get("scale", 1.0) * (alpha * values["fss"] + beta * values["aoag"]) / (alpha + beta)


# ---- entry points -----------------------------------------------------------------------------------------------


class CommandLineRefusal(InputError):
    """Exit code 2 from ``knowledge-retention``: the message is its one stderr line."""


def run_compute_krs(case: Case, tmp_path: Path) -> dict[str, Any]:
    return compute_krs(*(case.data()[k] for k in INPUTS), **case.options)  # type: ignore[misc]


def run_functions(case: Case, tmp_path: Path) -> dict[str, Any]:
    """The individual functions: feature_similarity_score, output_agreement, combine_krs."""
    data, options = case.data(), dict(case.options)  # type: ignore[misc]
    task = options.pop("task", "classification")
    method = options.pop("aoag_method", None) or DEFAULT_AOAG.get(task, "kl")
    fss = feature_similarity_score(data["teacher_features"], data["student_features"],
                                   method=options.pop("fss_method", "linear_cka"))
    aoag = output_agreement(data["teacher_outputs"], data["student_outputs"], method=method,
                            **{k: options.pop(k) for k in ("temperature", "inputs", "max_mse", "ignore_index") if k in options})
    return {"fss": fss, "aoag": aoag, "krs": combine_krs(fss, aoag, task=task, **options)}


def _split(value: Any, lo: int, hi: int | None) -> Any:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], np.ndarray) and value[0].ndim == 2:
        return [v[lo:hi] for v in value]  # a list of per-layer arrays
    return value[lo:hi]


def _batches(data: dict[str, Any]) -> list[tuple[int, int | None]]:
    """Row ranges of an uneven split (the last open-ended, so that no input loses rows), or one batch."""
    try:
        n = min(len(_split(data[k], 0, None)) for k in INPUTS)
    except (TypeError, IndexError):  # None, a scalar, a string: given whole, for the entry point to refuse
        return [(0, None)]
    if n < 2:
        return [(0, None)]
    cut = max(1, (2 * n) // 3)
    return [(0, cut), (cut, cut), (cut, None)]


def run_accumulator(case: Case, tmp_path: Path) -> dict[str, Any]:
    """KRSAccumulator fed two batches (an uneven split) and an empty one."""
    data = case.data()  # type: ignore[misc]
    acc = KRSAccumulator(**case.options)
    for lo, hi in _batches(data):
        acc.update(*(data[k] if hi is None and lo == 0 else _split(data[k], lo, hi) for k in INPUTS))
    return acc.compute()


_EVALUATE: dict[str, Any] = {}


def run_evaluate(case: Case, tmp_path: Path) -> dict[str, Any]:
    """The evaluate module: two add_batch calls, then compute with the options."""
    import evaluate

    module = evaluate.load(knowledge_retention.module_path(), cache_dir=str(tmp_path / "evaluate"))
    data = case.data()  # type: ignore[misc]
    for lo, hi in _batches(data):
        if hi is None or hi > lo:
            module.add_batch(**{k: data[k] if hi is None and lo == 0 else _split(data[k], lo, hi) for k in INPUTS})
    return module.compute(**case.options)


def _saved(case: Case, tmp_path: Path, extra: dict[str, Any] | None = None) -> Path:
    if case.file is not None:
        return case.file(tmp_path)
    data = case.data()  # type: ignore[misc]
    arrays = {k: (np.stack(v, axis=1) if isinstance(v, (list, tuple)) else np.asarray(v)) for k, v in data.items()}
    path = tmp_path / "case.npz"
    np.savez(path, **arrays, **(extra or {}))
    return path


_FLAGS = {"task": "--task", "alpha": "--alpha", "beta": "--beta", "fss_method": "--fss-method",
          "aoag_method": "--aoag-method", "temperature": "--temperature", "inputs": "--inputs", "max_mse": "--max-mse",
          "ignore_index": "--ignore-index"}


def run_cli(case: Case, tmp_path: Path) -> dict[str, Any]:
    """``knowledge-retention arrays FILE --json`` with the options as flags (in process: main(argv))."""
    from knowledge_retention.cli import main

    argv = ["arrays", str(_saved(case, tmp_path)), "--json"]
    for key, value in case.options.items():
        if value is not None:
            argv += [_FLAGS[key], str(value)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own refusals (a bad choice, a number that is not one)
            code = exit_.code if isinstance(exit_.code, int) else 2
    if code == 2:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert "Traceback" not in err.getvalue(), err.getvalue()
        raise CommandLineRefusal(lines[-1] if lines else "")
    assert code == 0, (code, err.getvalue())
    return json.loads(out.getvalue())


def _space_modules() -> tuple[Any, Any]:
    if str(SPACE) not in sys.path:
        sys.path.insert(0, str(SPACE))
    import space_io
    import space_results

    return space_io, space_results


def run_space(case: Case, tmp_path: Path) -> dict[str, Any]:
    """The Space's upload path: read_array_files -> parse_arrays -> score_arrays (ignore_index as a key)."""
    space_io, space_results = _space_modules()
    options = dict(case.options)
    extra = {"ignore_index": np.asarray(options.pop("ignore_index"))} if options.get("ignore_index") is not None else {}
    inputs = space_io.parse_arrays(space_io.read_array_files([_saved(case, tmp_path, extra)]))
    task = options.pop("task", "classification")
    alpha = options.pop("alpha", None)
    result = space_results.score_arrays(
        inputs, task=task, alpha=TASK_PRESETS.get(task, (0.5, 0.5))[0] if alpha is None else alpha,
        fss_method=options.pop("fss_method", "linear_cka"), aoag_method=options.pop("aoag_method", None) or "auto",
        temperature=options.pop("temperature", 1.0),
    )
    assert not options, f"the Space has no control for {sorted(options)}"
    return {"fss": result.fss, "aoag": result.aoag}


ENTRY_POINTS: dict[str, Callable[[Case, Path], dict[str, Any]]] = {
    "compute_krs": run_compute_krs,
    "functions": run_functions,
    "accumulator": run_accumulator,
    "evaluate": run_evaluate,
    "cli": run_cli,
    "space": run_space,
}

#: What each entry point can express: options it has no control for, and inputs it cannot take.
SPACE_OPTIONS = {"task", "alpha", "fss_method", "aoag_method", "temperature", "ignore_index"}
CLI_OPTIONS = set(_FLAGS)
