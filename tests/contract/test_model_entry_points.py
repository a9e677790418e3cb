"""Contract cases of the model entry points (issue 20): every mistake is the package's own error, naming the
argument (the flag on the command line), or the result equals an independent reference.

Entry points: the command line ``knowledge-retention evaluate`` (``cli.main`` in-process: the exit code, and
stderr one line naming the flag, without a traceback), ``evaluate_pair`` / ``evaluate_students``,
``KRSCallback`` (refused when built, not at the first evaluation inside ``trainer.train()``) and the Space's
model tab (``space_compare.compare_models``, ``parse_sentences``, ``texts_for``).

The references are computed here, independently of the package: each text run alone through the model
(no padding), the first token's state, naive Gram-space linear CKA (Kornblith et al. 2019, eq. 4 with the
centring matrix) and the mean of exp(-KL) from softmaxed logits.

Tiny random models are saved to a temporary folder once per module (the Hub is never used).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS.parent / "spaces_app"))  # the Space's modules, imported as the Space does

import lm_fixtures as lmfx  # noqa: E402
import text_fixtures as fx  # noqa: E402

from knowledge_retention import KRSCallback, evaluate_pair, evaluate_students  # noqa: E402
from knowledge_retention._validation import InputError, InputTypeError, LoadError  # noqa: E402
from knowledge_retention.cli import EXIT_LOAD, EXIT_OK, EXIT_USAGE, main  # noqa: E402

N_TEXTS = 12


# --- the models and data, saved once -------------------------------------------------------------------


@dataclass
class Zoo:
    root: Path
    texts: list[str]
    labels: list[int]
    tokenizer: Any

    def __getattr__(self, name: str) -> str:  # m.teacher -> "<root>/teacher"
        return str(self.root / name)


def _save(model: Any, tokenizer: Any, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _headless_lm(folder: Path) -> None:
    """A causal LM whose checkpoint lacks its (untied) output layer: loading it would draw a random one."""
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=lmfx.vocab_size(), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    _save(LlamaForCausalLM(config), lmfx.tokenizer(bos=True, pad="<pad>"), folder)
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("lm_head")}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})


@pytest.fixture(scope="module")
def m(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    root = tmp_path_factory.mktemp("zoo")
    tok = fx.bert_tokenizer()
    for name, model in (("teacher", fx.tiny_bert(4, 48, seed=0)), ("student", fx.tiny_bert(2, 32, seed=3)),
                        ("student3", fx.tiny_bert(2, 32, num_labels=3, seed=3)),
                        ("deep", fx.tiny_bert(6, 32, seed=4)), ("headless", fx.tiny_bert(2, 32, seed=3, head=False)),
                        ("headless_teacher", fx.tiny_bert(4, 48, seed=0, head=False)),
                        ("reg_teacher", fx.tiny_bert(4, 48, num_labels=1, seed=0)),
                        ("reg_student", fx.tiny_bert(2, 32, num_labels=1, seed=3))):
        _save(model, tok, root / name)
    lm_tok = lmfx.tokenizer(bos=False, pad=None)
    _save(lmfx.tiny_gpt2(layers=2, seed=0), lm_tok, root / "lm_teacher")
    _save(lmfx.tiny_gpt2(layers=1, seed=1), lm_tok, root / "lm_student")
    _save(lmfx.tiny_gpt2(layers=1, seed=1, vocab=lmfx.vocab_size() + 3),
          lmfx.tokenizer(bos=False, pad=None, extra=("x1", "x2", "x3")), root / "lm_other_vocab")
    _headless_lm(root / "lm_no_head")
    (root / "not_a_model").mkdir()
    (root / "not_a_model" / "notes.txt").write_text("not a model")
    (root / "bad_config").mkdir()
    (root / "bad_config" / "config.json").write_text("{ this is not json")
    fx.tiny_bert(2, 32, seed=3).save_pretrained(root / "no_tokenizer")
    _save(fx.tiny_bert(2, 32, seed=3), tok, root / "damaged")
    weights = (root / "damaged" / "model.safetensors").read_bytes()
    (root / "damaged" / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # a copy cut short
    (root / "a_file").write_text("x")
    texts = fx.sentences(N_TEXTS, seed=5)
    labels = [i % 2 for i in range(N_TEXTS)]
    rows = list(zip(texts, labels, strict=True))
    (root / "data.csv").write_text("sentence,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    (root / "empty.csv").write_text("")
    (root / "header.csv").write_text("sentence,label\n")
    (root / "numeric.csv").write_text("sentence,label\n" + "".join(f"{i},{y}\n" for i, y in enumerate(labels)))
    (root / "empty_text.csv").write_text(
        "sentence,label\n" + "".join(f"{'' if i == 3 else t},{y}\n" for i, (t, y) in enumerate(rows)))
    (root / "word_labels.csv").write_text(
        "sentence,label\n" + "".join(f"{t},{'pos' if y else 'neg'}\n" for t, y in rows))
    (root / "missing_label.csv").write_text(
        "sentence,label\n" + "".join(f"{t},{'' if i == 4 else y}\n" for i, (t, y) in enumerate(rows)))
    (root / "big_labels.csv").write_text("sentence,label\n" + "".join(f"{t},{i % 5}\n" for i, t in enumerate(texts)))
    (root / "data.xml").write_text("<x/>")
    (root / "glue").mkdir()
    (root / "glue" / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    import datasets

    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"sentence": texts, "label": labels})}).save_to_disk(
        str(root / "saved"))
    return Zoo(root, texts, labels, tok)


# --- the independent reference ---------------------------------------------------------------------------


def _naive_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    h = np.eye(n) - np.full((n, n), 1.0 / n)
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_)))


def _one_by_one(path: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Each text alone (no padding): the final layer's first-token state and the logits, float64."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    heads = any(str(a).endswith("ForSequenceClassification") for a in config.architectures or [])
    model = (AutoModelForSequenceClassification if heads else AutoModel).from_pretrained(path).double().eval()
    tok = AutoTokenizer.from_pretrained(path)
    feats, logits = [], []
    with torch.no_grad():
        for text in texts:
            out = model(**tok(text, return_tensors="pt"), output_hidden_states=True)
            feats.append(out.hidden_states[-1][0, 0].numpy())
            if heads:
                logits.append(out.logits[0].numpy())
    return np.stack(feats), (np.stack(logits) if heads else None)


def _reference(teacher: str, student: str, texts: list[str], alpha: float = 0.5) -> dict[str, float | None]:
    ft, lt = _one_by_one(teacher, texts)
    fs, ls = _one_by_one(student, texts)
    fss = _naive_linear_cka(ft, fs)
    if lt is None or ls is None:
        return {"fss": fss, "aoag": None, "krs": None}
    log_p = lt - np.log(np.exp(lt).sum(axis=1, keepdims=True))
    log_q = ls - np.log(np.exp(ls).sum(axis=1, keepdims=True))
    aoag = float(np.mean(np.exp(-np.sum(np.exp(log_p) * (log_p - log_q), axis=1))))
    return {"fss": fss, "aoag": aoag, "krs": alpha * fss + (1 - alpha) * aoag}


def _assert_reference(result: Any, expected: dict[str, float | None]) -> None:
    for key, value in expected.items():
        got = result[key] if isinstance(result, dict) else getattr(result, key)
        if value is None:
            assert got is None, key
        else:
            assert got == pytest.approx(value, abs=1e-8), key


# --- the command line: `knowledge-retention evaluate` ----------------------------------------------------


@dataclass(frozen=True)
class CliCase:
    """``argv`` with ``@name`` for the zoo's paths; the exit code and the flag the one error line must name."""

    id: str
    argv: tuple[str, ...]
    code: int
    flag: str


CLI_CASES = [
    CliCase("wrong text column", ("--text-column", "text"), EXIT_USAGE, "--text-column"),
    CliCase("wrong label column", ("--label-column", "gold"), EXIT_USAGE, "--label-column"),
    CliCase("numeric texts", ("--dataset", "@numeric.csv"), EXIT_USAGE, "--text-column"),
    CliCase("an empty text", ("--dataset", "@empty_text.csv"), EXIT_USAGE, "--text-column"),
    CliCase("word labels", ("--dataset", "@word_labels.csv", "--label-column", "label"), EXIT_USAGE, "--label-column"),
    CliCase("a missing label", ("--dataset", "@missing_label.csv", "--label-column", "label"), EXIT_USAGE,
            "--label-column"),
    CliCase("labels beyond the classes", ("--dataset", "@big_labels.csv", "--label-column", "label"), EXIT_USAGE,
            "--label-column"),
    CliCase("student layer out of range", ("--layers", "0:9"), EXIT_USAGE, "--layers"),
    CliCase("teacher layer out of range", ("--layers", "9:1"), EXIT_USAGE, "--layers"),
    CliCase("negative layer out of range", ("--layers", "-1:-7"), EXIT_USAGE, "--layers"),
    CliCase("uniform with a deeper student", ("--student", "@deep", "--layers", "uniform"), EXIT_USAGE, "--layers"),
    CliCase("all with a deeper student", ("--student", "@deep", "--layers", "all"), EXIT_USAGE, "--layers"),
    CliCase("constant embeddings under cls", ("--layers", "0:0"), EXIT_USAGE, "--pooling"),
    CliCase("3-label student, 2-label teacher", ("--student", "@student3",), EXIT_USAGE, "--student"),
    CliCase("3-label baseline", ("--baseline-student", "@student3"), EXIT_USAGE, "--baseline-student"),
    CliCase("kl on regression heads", ("--teacher", "@reg_teacher", "--student", "@reg_student", "--aoag-method",
                                       "kl"), EXIT_USAGE, "--aoag-method"),
    CliCase("cosine on unequal widths", ("--fss-method", "cosine"), EXIT_USAGE, "--fss-method"),
    CliCase("zero temperature", ("--temperature", "0"), EXIT_USAGE, "--temperature"),
    CliCase("negative temperature", ("--temperature", "-2"), EXIT_USAGE, "--temperature"),
    CliCase("nan temperature", ("--temperature", "nan"), EXIT_USAGE, "--temperature"),
    CliCase("alpha + beta != 1", ("--alpha", "0.3", "--beta", "0.3"), EXIT_USAGE, "--alpha"),
    CliCase("empty csv", ("--dataset", "@empty.csv"), EXIT_USAGE, "--dataset"),
    CliCase("header-only csv", ("--dataset", "@header.csv"), EXIT_USAGE, "--dataset"),
    CliCase("missing data file", ("--dataset", "@nowhere.csv"), EXIT_USAGE, "--dataset"),
    CliCase("unsupported data file", ("--dataset", "@data.xml"), EXIT_USAGE, "--dataset"),
    CliCase("unknown split of a saved dataset", ("--dataset", "@saved", "--split", "test"), EXIT_USAGE, "--split"),
    CliCase("unknown split of a GLUE folder", ("--dataset", "@glue", "--split", "train"), EXIT_USAGE, "--split"),
    CliCase("teacher folder that is not a model", ("--teacher", "@not_a_model"), EXIT_LOAD, "--teacher"),
    CliCase("student folder that is not a model", ("--student", "@not_a_model"), EXIT_LOAD, "--student"),
    CliCase("baseline folder that is not a model", ("--baseline-student", "@not_a_model"), EXIT_LOAD,
            "--baseline-student"),
    CliCase("relative teacher path that names no folder", ("--teacher", "runs/teacher"), EXIT_LOAD, "--teacher"),
    CliCase("bare teacher name that names no folder", ("--teacher", "teacher-v2"), EXIT_LOAD, "--teacher"),
    CliCase("deep relative student path", ("--student", "runs/a/student"), EXIT_LOAD, "--student"),
    CliCase("absolute student path that names nothing", ("--student", "@gone"), EXIT_LOAD, "--student"),
    CliCase("teacher path that is a file", ("--teacher", "@a_file"), EXIT_LOAD, "--teacher"),
    CliCase("teacher with a damaged config", ("--teacher", "@bad_config"), EXIT_LOAD, "--teacher"),
    CliCase("student without a tokenizer", ("--student", "@no_tokenizer"), EXIT_LOAD, "--student"),
    CliCase("student with truncated weights", ("--student", "@damaged"), EXIT_LOAD, "--student"),
    CliCase("teacher cache that is a file", ("--teacher-cache", "@a_file"), EXIT_USAGE, "--teacher-cache"),
    CliCase("causal-lm with two BERT classifiers", ("--task", "causal-lm"), EXIT_USAGE, "--teacher"),
    CliCase("causal-lm with a BERT student", ("--task", "causal-lm", "--teacher", "@lm_teacher"), EXIT_USAGE,
            "--student"),
    CliCase("causal-lm student without its output layer", ("--task", "causal-lm", "--teacher", "@lm_teacher",
                                                            "--student", "@lm_no_head"), EXIT_USAGE, "--student"),
    CliCase("causal LMs under task nlp", ("--teacher", "@lm_teacher", "--student", "@lm_student"), EXIT_USAGE,
            "--task"),
    CliCase("causal-lm with --label-column", ("--task", "causal-lm", "--teacher", "@lm_teacher", "--student",
                                              "@lm_student", "--label-column", "label"), EXIT_USAGE, "--label-column"),
    # a causal-LM pair takes --teacher-cache (tests/test_lm_cli.py); with --generate-tokens the teacher writes
    # the continuations at every run, so there is nothing to replay
    CliCase("causal-lm with --pooling", ("--task", "causal-lm", "--teacher", "@lm_teacher", "--student",
                                         "@lm_student", "--pooling", "mean"), EXIT_USAGE, "--pooling"),
    CliCase("causal-lm generation with --teacher-cache", ("--task", "causal-lm", "--teacher", "@lm_teacher",
                                                          "--student", "@lm_student", "--teacher-cache", "@cache",
                                                          "--generate-tokens", "2"), EXIT_USAGE, "--teacher-cache"),
    CliCase("causal-lm with a different vocabulary", ("--task", "causal-lm", "--teacher", "@lm_teacher", "--student",
                                                      "@lm_other_vocab"), EXIT_USAGE, "student"),
    CliCase("--generate-tokens under task nlp", ("--generate-tokens", "3"), EXIT_USAGE, "--generate-tokens"),
    CliCase("--prompt-column under task nlp", ("--prompt-column", "sentence"), EXIT_USAGE, "--prompt-column"),
]


def _argv(case_argv: tuple[str, ...], m: Zoo, tmp_path: Path) -> list[str]:
    """``@name`` is the zoo's ``name``; ``@gone``, ``@cache`` and ``@nowhere.csv`` lie in ``tmp_path`` (absent)."""
    given = set(case_argv[::2])
    argv = ["evaluate", *case_argv]
    for flag, value in (("--teacher", "@teacher"), ("--student", "@student"), ("--dataset", "@data.csv"),
                        ("--split", "data")):
        if flag not in given:
            argv += [flag, value]
    argv += ["--quiet", "--bootstrap", "0", "--no-latency", "--output-dir", str(tmp_path / "report")]
    scratch = {"@gone", "@cache", "@nowhere.csv"}
    return [str((tmp_path if a in scratch else m.root) / a[1:]) if a.startswith("@") else a for a in argv]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # relative model paths are relative to an empty folder


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_evaluate_mistakes(case: CliCase, m: Zoo, tmp_path: Path, offline: None,
                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_argv(case.argv, m, tmp_path))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("knowledge-retention: error:")]
    assert code == case.code, err[-2000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert case.flag in lines[0], lines[0]
    assert not (tmp_path / "report" / "report.json").exists()  # refused before any report was written


@pytest.mark.parametrize(("argv", "flag"), [(("--batch-size", "0"), "--batch-size"), (("--max-length", "-1"), "--max-length"),
                                            (("--layers", "0:0,6"), "--layers"), (("--alpha", "1.5"), "--alpha"),
                                            (("--pooling", "max"), "--pooling"), (("--task", "vision"), "--task")],
                         ids=["batch size 0", "negative max length", "half a layer pair", "alpha above 1",
                              "unknown pooling", "unknown task"])
def test_cli_evaluate_argument_errors(argv: tuple[str, ...], flag: str, m: Zoo, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(_argv(argv, m, tmp_path))
    err = capsys.readouterr().err
    assert exc.value.code == EXIT_USAGE and "Traceback" not in err
    assert flag in err.strip().splitlines()[-1]


def test_cli_evaluate_equals_the_reference(m: Zoo, tmp_path: Path, offline: None,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_argv((), m, tmp_path)) == EXIT_OK, capsys.readouterr().err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    _assert_reference(report["headline"], _reference(m.teacher, m.student, m.texts))
    assert f"KRS {report['headline']['krs']:.3f}" in capsys.readouterr().out


def test_cli_evaluate_headless_teacher_is_fss_only(m: Zoo, tmp_path: Path, offline: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: a BertModel teacher crashed after writing the report (formatting a KRS of None)."""
    assert main(_argv(("--teacher", "@headless_teacher"), m, tmp_path)) == EXIT_OK
    out, err = capsys.readouterr()
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    _assert_reference(report["headline"], _reference(m.headless_teacher, m.student, m.texts))
    fss = report["headline"]["fss"]
    assert f"FSS {fss:.3f} only" in out and "no classification head" in out and "Traceback" not in err


def test_cli_evaluate_rbf_cka_without_bootstrap(m: Zoo, tmp_path: Path, offline: None,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """RBF CKA needs the arrays: the command line keeps them itself (there is no keep-arrays flag to ask for)."""
    assert main(_argv(("--fss-method", "rbf_cka"), m, tmp_path)) == EXIT_OK, capsys.readouterr().err
    direct = evaluate_pair(m.teacher, m.student, m.texts, fss_method="rbf_cka", keep_arrays=True, progress=False)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["headline"]["fss"] == pytest.approx(direct.fss, abs=1e-9)


# --- evaluate_pair / evaluate_students -------------------------------------------------------------------


@dataclass(frozen=True)
class CallCase:
    """``call(m)`` must raise ``error`` with a message matching ``match`` (which names the argument)."""

    id: str
    call: Callable[[Zoo], Any]
    error: type[BaseException]
    match: str


def _pair(m: Zoo, teacher: Any = None, student: Any = None, data: Any = None, **options: Any) -> Any:
    return evaluate_pair(teacher if teacher is not None else m.teacher, student if student is not None else m.student,
                         data if data is not None else m.texts, progress=False, **options)


def _obj(path: str) -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path)


def _dataset_dict(m: Zoo) -> Any:
    import datasets

    return datasets.load_from_disk(str(m.root / "saved"))


def _iterable(m: Zoo) -> Any:
    import datasets

    return datasets.Dataset.from_dict({"sentence": m.texts}).to_iterable_dataset()


def _arrow(m: Zoo, **columns: list[Any]) -> Any:
    import datasets

    return datasets.Dataset.from_dict(columns)


LIBRARY_CASES = [
    CallCase("teacher of the wrong type", lambda m: _pair(m, teacher=42), InputTypeError, "`teacher` must be"),
    CallCase("missing teacher folder", lambda m: _pair(m, teacher=str(m.root / "gone")), LoadError,
             "`teacher`: there is no model folder"),
    CallCase("student folder that is not a model", lambda m: _pair(m, student=m.not_a_model), LoadError,
             "`student`: the folder .* is not a model"),
    CallCase("teacher with a damaged config", lambda m: _pair(m, teacher=m.bad_config), LoadError,
             "`teacher`: .*config.json is not"),
    CallCase("student with truncated weights", lambda m: _pair(m, student=m.damaged), LoadError,
             "`student`: the model at .* could not be loaded"),
    CallCase("student without a tokenizer", lambda m: _pair(m, student=m.no_tokenizer), LoadError,
             "`student`: .* holds no tokenizer files"),
    CallCase("student object from a folder without a tokenizer", lambda m: _pair(m, student=_obj(m.no_tokenizer)),
             LoadError, "`student`: .* holds no tokenizer files"),
    CallCase("student object with no path", lambda m: _pair(m, student=fx.tiny_bert(2, 32, seed=3)), InputTypeError,
             "`student_tokenizer` is required"),
    CallCase("tokenizer that is not one", lambda m: _pair(m, teacher_tokenizer="bert"), InputTypeError,
             "`teacher_tokenizer` must be a transformers tokenizer"),
    CallCase("wrong text column", lambda m: _pair(m, data={"text": m.texts}), InputError, "`text_column='sentence'`"),
    CallCase("wrong label column", lambda m: _pair(m, data={"sentence": m.texts}, label_column="gold"), InputError,
             "`label_column='gold'`"),
    CallCase("labels for a plain list", lambda m: _pair(m, label_column="label"), InputError, "`label_column='label'`"),
    CallCase("a None among the texts", lambda m: _pair(m, data=[*m.texts[:3], None]), InputTypeError,
             r"example 3 is empty"),
    CallCase("a number among the texts", lambda m: _pair(m, data={"sentence": [*m.texts[:3], 7]}), InputTypeError,
             r"`dataset\['sentence'\]` must hold strings"),
    CallCase("numeric Arrow text column", lambda m: _pair(m, data=_arrow(m, sentence=list(range(5)))), InputTypeError,
             "`text_column='sentence'` holds int64"),
    CallCase("word labels in an Arrow column", lambda m: _pair(m, data=_arrow(m, sentence=m.texts, label=["pos"] * N_TEXTS),
                                                              label_column="label"), InputTypeError,
             "`label_column='label'` holds strings"),
    CallCase("a missing label", lambda m: _pair(m, data={"sentence": m.texts, "label": [None, *m.labels[1:]]},
                                                label_column="label"), InputError, "example 0 has no label"),
    CallCase("columns of unequal length", lambda m: _pair(m, data={"sentence": m.texts, "x": [1]}), InputError,
             "`dataset` columns must have the same length"),
    CallCase("empty dataset", lambda m: _pair(m, data=[]), InputError, "`dataset` is empty"),
    CallCase("a DatasetDict", lambda m: _pair(m, data=_dataset_dict(m)), InputTypeError, "`dataset` is a DatasetDict"),
    CallCase("an IterableDataset", lambda m: _pair(m, data=_iterable(m)), InputTypeError, "IterableDataset"),
    CallCase("dataset of the wrong type", lambda m: _pair(m, data=3.5), InputTypeError, "`dataset` must be"),
    CallCase("unknown layer preset", lambda m: _pair(m, layers="middle"), InputError, "`layers` must be one of"),
    CallCase("empty layer list", lambda m: _pair(m, layers=[]), InputError, "`layers` is an empty list"),
    CallCase("half a layer pair", lambda m: _pair(m, layers=[(1,)]), InputTypeError, r"`layers\[0\]` must be"),
    CallCase("float layer index", lambda m: _pair(m, layers=[(1.0, 1)]), InputTypeError, "must be an int"),
    CallCase("student layer out of range", lambda m: _pair(m, layers=[(0, 5)]), InputError,
             "student layer 5 is out of range"),
    CallCase("uniform with a deeper student", lambda m: _pair(m, student=m.deep, layers="uniform"), InputError,
             "`layers='uniform'`"),
    CallCase("unknown pooling", lambda m: _pair(m, pooling="max"), InputError, "`pooling` must be one of"),
    CallCase("batch size 0", lambda m: _pair(m, batch_size=0), InputError, "`batch_size` must be >= 1"),
    CallCase("fractional batch size", lambda m: _pair(m, batch_size=2.5), InputTypeError, "`batch_size` must be"),
    CallCase("max_length 0", lambda m: _pair(m, max_length=0), InputError, "`max_length` must be >= 1"),
    CallCase("negative max_examples", lambda m: _pair(m, max_examples=-3), InputError, "`max_examples` must be >= 1"),
    CallCase("3-label student", lambda m: _pair(m, student=m.student3), InputError, "predicts 2 labels"),
    CallCase("cosine on unequal widths", lambda m: _pair(m, fss_method="cosine"), InputError, "`fss_method='cosine'`"),
    CallCase("kl on regression heads", lambda m: _pair(m, teacher=m.reg_teacher, student=m.reg_student,
                                                       aoag_method="kl"), InputError, "`aoag_method='kl'`"),
    CallCase("teacher cache of the wrong type", lambda m: _pair(m, teacher_cache=5), InputTypeError, "`teacher_cache`"),
    CallCase("teacher cache that is a file", lambda m: _pair(m, teacher_cache=m.a_file), InputError,
             "`teacher_cache`: .* is a file"),
    CallCase("causal-lm with BERT paths", lambda m: _pair(m, task="causal-lm"), InputTypeError,
             "`teacher` .* is a BertForSequenceClassification, not a causal language model"),
    CallCase("causal-lm with BERT objects", lambda m: _pair(m, teacher=_obj(m.teacher), student=_obj(m.student),
                                                            task="causal-lm", teacher_tokenizer=m.tokenizer,
                                                            student_tokenizer=m.tokenizer), InputTypeError,
             "`teacher` must be a causal language model"),
    CallCase("causal-lm student without its output layer", lambda m: _pair(m, teacher=m.lm_teacher,
                                                                            student=m.lm_no_head, task="causal-lm"),
             InputTypeError, "`student` .* holds no weights for its output layer"),
    CallCase("causal LMs of different vocabularies", lambda m: _pair(m, teacher=m.lm_teacher, student=m.lm_other_vocab),
             InputError, "vocabulary"),
    CallCase("causal LM with a classifier", lambda m: _pair(m, teacher=m.lm_teacher, task="nlp"), InputTypeError,
             "task='nlp' scores classifier outputs"),
    CallCase("a student folder that is not a model, by name", lambda m: evaluate_students(
        m.teacher, {"kd": m.student, "pkd": m.not_a_model}, m.texts, progress=False), LoadError,
        r"`students\['pkd'\]`: the folder"),
    CallCase("a 3-label student among several", lambda m: evaluate_students(
        m.teacher, {"kd": m.student, "wide": m.student3}, m.texts, progress=False), InputError, "student 'wide' 3"),
]


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=[c.id for c in LIBRARY_CASES])
def test_library_mistakes(case: CallCase, m: Zoo, offline: None) -> None:
    with pytest.raises(case.error, match=case.match) as err:
        case.call(m)
    assert isinstance(err.value, InputError)  # the package's own (LoadError and InputTypeError are InputErrors)


def test_evaluate_pair_equals_the_reference(m: Zoo) -> None:
    _assert_reference(_pair(m), _reference(m.teacher, m.student, m.texts))


def test_evaluate_pair_headless_is_fss_only_and_says_so(m: Zoo) -> None:
    with pytest.warns(UserWarning, match="FSS only"):
        result = _pair(m, student=m.headless)
    _assert_reference(result, _reference(m.teacher, m.headless, m.texts))
    assert any("no classification head" in note for note in result.notes)


def test_evaluate_students_equals_the_reference(m: Zoo) -> None:
    results = evaluate_students(m.teacher, {"a": m.student, "b": m.teacher}, m.texts, progress=False)
    _assert_reference(results["a"], _reference(m.teacher, m.student, m.texts))
    _assert_reference(results["b"], _reference(m.teacher, m.teacher, m.texts))


# --- KRSCallback: refused when built ---------------------------------------------------------------------


def _callback(m: Zoo, teacher: Any = None, data: Any = None, **options: Any) -> KRSCallback:
    return KRSCallback(teacher if teacher is not None else m.teacher, data if data is not None else m.texts,
                       m.tokenizer, **options)


CALLBACK_CASES = [
    CallCase("unknown option", lambda m: _callback(m, layer="final"), InputTypeError, r"unknown option\(s\) \['layer'\]"),
    CallCase("reserved option", lambda m: _callback(m, accelerator=None), InputTypeError, r"sets \['accelerator'\]"),
    CallCase("no eval texts", lambda m: KRSCallback(m.teacher, None), InputTypeError, "`eval_dataset` must be"),
    CallCase("empty eval texts", lambda m: _callback(m, data=[]), InputError, "`eval_dataset` is empty"),
    CallCase("a None among the eval texts", lambda m: _callback(m, data=[*m.texts, None]), InputTypeError,
             f"example {N_TEXTS} is empty"),
    CallCase("a number among the eval texts", lambda m: _callback(m, data={"sentence": [1, 2, 3]}), InputTypeError,
             r"`eval_dataset\['sentence'\]` must hold strings"),
    CallCase("wrong text column", lambda m: _callback(m, data={"text": m.texts}), InputError,
             "`text_column='sentence'` is not a column of `eval_dataset`"),
    CallCase("unknown layer preset", lambda m: _callback(m, layers="middle"), InputError, "`layers` must be one of"),
    CallCase("half a layer pair", lambda m: _callback(m, layers=[(1,)]), InputTypeError, r"`layers\[0\]`"),
    CallCase("unknown pooling", lambda m: _callback(m, pooling="max"), InputError, "`pooling` must be one of"),
    CallCase("batch size 0", lambda m: _callback(m, batch_size=0), InputError, "`batch_size` must be >= 1"),
    CallCase("max_examples 0", lambda m: _callback(m, max_examples=0), InputError, "`max_examples` must be >= 1"),
    CallCase("unknown task", lambda m: _callback(m, task="vision"), InputError, "`task` must be one of"),
    CallCase("alpha above 1", lambda m: _callback(m, alpha=1.5), InputError, "alpha"),
    CallCase("alpha + beta != 1", lambda m: _callback(m, alpha=0.3, beta=0.3), InputError, "alpha"),
    CallCase("unknown fss_method", lambda m: _callback(m, fss_method="svcca"), InputError, "`fss_method` must be one of"),
    CallCase("rbf_cka without the arrays", lambda m: _callback(m, fss_method="rbf_cka"), InputError, "keep_arrays=True"),
    CallCase("unknown aoag_method", lambda m: _callback(m, aoag_method="iou"), InputError, "`aoag_method` must be one of"),
    CallCase("zero temperature", lambda m: _callback(m, temperature=0.0), InputError, "`temperature`"),
    CallCase("negative temperature, unused by mse", lambda m: _callback(m, aoag_method="mse", temperature=-1.0),
             InputError, "`temperature`"),
    CallCase("unknown mixed precision", lambda m: _callback(m, mixed_precision="fp8"), InputError,
             "`mixed_precision` must be one of"),
    CallCase("group_by_length not a bool", lambda m: _callback(m, group_by_length="yes"), InputTypeError,
             "`group_by_length` must be a bool"),
    CallCase("cross_layer naming others", lambda m: _callback(m, cross_layer=["kd"]), InputError, "`cross_layer`"),
    CallCase("a causal-lm option under nlp", lambda m: _callback(m, prompt_column="prompt"), InputError,
             "`prompt_column` apply to task='causal-lm' only"),
    CallCase("generate of the wrong form", lambda m: _callback(m, task="causal-lm", generate=5), InputTypeError,
             "`generate` must be a dict"),
    CallCase("unknown token average", lambda m: _callback(m, task="causal-lm", average="word"), InputError,
             "`average` must be one of"),
    CallCase("top_k 0", lambda m: _callback(m, task="causal-lm", top_k=0), InputError, "`top_k` must be >= 1"),
    CallCase("teacher of the wrong type", lambda m: _callback(m, teacher=3), InputTypeError, "`teacher` must be"),
    CallCase("teacher folder that is not a model", lambda m: _callback(m, teacher=m.not_a_model), LoadError,
             "`teacher`: the folder"),
    CallCase("missing teacher folder", lambda m: _callback(m, teacher=str(m.root / "gone")), LoadError,
             "`teacher`: there is no model folder"),
    CallCase("tokenizer that is not one", lambda m: KRSCallback(m.teacher, m.texts, "bert"), InputTypeError,
             "`tokenizer` must be a transformers tokenizer"),
]


@pytest.mark.parametrize("case", CALLBACK_CASES, ids=[c.id for c in CALLBACK_CASES])
def test_callback_mistakes_are_refused_when_built(case: CallCase, m: Zoo, offline: None) -> None:
    with pytest.raises(case.error, match=case.match) as err:
        case.call(m)
    assert isinstance(err.value, InputError)


def _trainer(m: Zoo, tmp_path: Path, callback: KRSCallback, student: str = "student", **kwargs: Any) -> Any:
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True)
    return Trainer(model=AutoModelForSequenceClassification.from_pretrained(getattr(m, student)), args=args,
                   callbacks=[callback], **kwargs)


TRAINER_CASES = [
    CallCase("student layer out of range, told when the Trainer is built",
             lambda m, tmp: _trainer(m, tmp, _callback(m, layers=[(4, 9)])), InputError,
             "student layer 9 is out of range; the student has 3 hidden states"),
    CallCase("teacher layer out of range, told when the Trainer is built",
             lambda m, tmp: _trainer(m, tmp, _callback(m, layers=[(-6, 1)])), InputError, "teacher layer -6"),
    CallCase("uniform with a deeper student, told when the Trainer is built",
             lambda m, tmp: _trainer(m, tmp, _callback(m, layers="uniform"), student="deep"), InputError,
             "`layers='uniform'`"),
    CallCase("no student tokenizer anywhere",
             lambda m, tmp: _trainer(m, tmp, KRSCallback(m.teacher, m.texts)), InputTypeError,
             "needs the student's tokenizer"),
]


@pytest.mark.parametrize("case", TRAINER_CASES, ids=[c.id for c in TRAINER_CASES])
def test_callback_mistakes_are_refused_when_the_trainer_is_built(case: CallCase, m: Zoo, tmp_path: Path) -> None:
    with pytest.raises(case.error, match=case.match):
        case.call(m, tmp_path)  # type: ignore[call-arg]


def test_callback_accepts_what_the_models_allow(m: Zoo, tmp_path: Path) -> None:
    callback = _callback(m, layers=[(4, 2), (-1, -1), (2, 1)])
    trainer = _trainer(m, tmp_path, callback)
    assert trainer.callback_handler.callbacks[0] is callback  # built, and first in line before the loggers


def test_callback_score_equals_the_reference(m: Zoo) -> None:
    from transformers import AutoModelForSequenceClassification

    callback = _callback(m, cross_layer=False)
    student = AutoModelForSequenceClassification.from_pretrained(m.student)
    _assert_reference(callback.score(student), _reference(m.teacher, m.student, m.texts))


# --- the Space's model tab -------------------------------------------------------------------------------


@pytest.fixture
def space(monkeypatch: pytest.MonkeyPatch) -> Any:
    pytest.importorskip("gradio")
    import space_compare

    monkeypatch.delenv("KRS_ALLOW_CUSTOM_MODELS", raising=False)
    return space_compare


def _listed(m: Zoo) -> list[tuple[str, str]]:
    return [(name, getattr(m, name)) for name in ("teacher", "student", "student3", "deep", "lm_teacher", "not_a_model")]


def _compare(space: Any, m: Zoo, teacher: str = "teacher", student: str = "student", texts: Any = None,
             **options: Any) -> Any:
    return space.compare_models(getattr(m, teacher) if teacher else "", getattr(m, student),
                                m.texts if texts is None else texts, None, choices=_listed(m), **options)


SPACE_CASES = [
    CallCase("no teacher chosen", lambda s, m: _compare(s, m, teacher=""), InputError, "Choose a teacher"),
    CallCase("a model that is not listed", lambda s, m: s.compare_models(m.teacher, "/etc", m.texts, None,
                                                                          choices=_listed(m)), InputError,
             "Pick the student from the list"),
    CallCase("segmentation preset", lambda s, m: _compare(s, m, task="segmentation"), InputError,
             "not segmentation"),
    CallCase("unknown layers", lambda s, m: _compare(s, m, layers="middle"), InputError, "Unknown option: layers middle"),
    CallCase("a causal LM against a classifier", lambda s, m: _compare(s, m, teacher="lm_teacher"), InputError,
             "The teacher is a causal language model and the student is not"),
    CallCase("3-label student", lambda s, m: _compare(s, m, student="student3"), InputError, "predicts 2 labels"),
    CallCase("uniform with a deeper student", lambda s, m: _compare(s, m, student="deep", layers="uniform"), InputError,
             "`layers='uniform'`"),
    CallCase("no texts", lambda s, m: _compare(s, m, texts=[]), InputError, "`dataset` is empty"),
    CallCase("a listed folder that is not a model", lambda s, m: _compare(s, m, student="not_a_model"), InputError,
             "Could not load"),
    CallCase("one typed sentence", lambda s, m: s.parse_sentences("only one"), InputError, "at least 2 sentences"),
    CallCase("a label that is not an integer", lambda s, m: s.parse_sentences("good\t1\nbad\tneg"), InputError,
             "Line 2: the label after the TAB must be an integer"),
    CallCase("unknown text source", lambda s, m: s.texts_for("my files", "", 8), InputError, "Unknown text source"),
]


@pytest.mark.parametrize("case", SPACE_CASES, ids=[c.id for c in SPACE_CASES])
def test_space_model_tab_mistakes(case: CallCase, m: Zoo, space: Any, offline: None) -> None:
    with pytest.raises(case.error, match=case.match):
        case.call(space, m)  # type: ignore[call-arg]


def test_space_compare_models_equals_the_reference(m: Zoo, space: Any) -> None:
    result = _compare(space, m)
    expected = _reference(m.teacher, m.student, m.texts)
    assert result.fss == pytest.approx(expected["fss"], abs=1e-8)
    assert result.aoag == pytest.approx(expected["aoag"], abs=1e-8)


def test_the_catalogue_covers_every_entry_point() -> None:
    """At least 60 refusals, and every entry point has cases (the tally the closing note gives)."""
    tally = {"cli": len(CLI_CASES) + 6, "library": len(LIBRARY_CASES), "callback": len(CALLBACK_CASES) + len(TRAINER_CASES),
             "space": len(SPACE_CASES)}
    assert sum(tally.values()) >= 60 and min(tally.values()) >= 10, tally
    for cases in (CLI_CASES, LIBRARY_CASES, CALLBACK_CASES, TRAINER_CASES, SPACE_CASES):
        assert len({c.id for c in cases}) == len(cases)  # unique ids: a case is never silently replaced


def test_space_never_advises_an_option_it_has_not(space: Any) -> None:
    """Issue 20: the Space told visitors to pass inputs='probabilities', which it has no control for."""
    from space_io import parse_arrays
    from space_results import score_arrays

    rng = np.random.default_rng(0)
    x, logits = rng.normal(size=(20, 4)), rng.normal(size=(20, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    arrays = {"teacher_features": x, "student_features": x, "teacher_logits": probabilities, "student_logits": logits}
    with pytest.raises(InputError, match="`teacher_logits` look like probabilities") as err:
        score_arrays(parse_arrays(arrays), task="classification", alpha=0.3)
    assert "inputs=" not in str(err.value) and "upload the raw logits, or the log of these probabilities" in str(err.value)
    # the advice is right: the log of the probabilities scores as the logits they came from
    arrays["teacher_logits"] = np.log(probabilities)
    direct = score_arrays(parse_arrays({**arrays, "teacher_logits": logits}), task="classification", alpha=0.3)
    assert score_arrays(parse_arrays(arrays), task="classification", alpha=0.3).aoag == pytest.approx(direct.aoag)


def test_space_memory_error_does_not_blame_the_data_size() -> None:
    """Issue 20: a 3 KB damaged file was called 'Out of memory: use fewer examples'."""
    pytest.importorskip("gradio")
    import importlib.util

    spec = importlib.util.spec_from_file_location("krs_space_app_contract", TESTS.parent / "spaces_app" / "app.py")
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = app
    spec.loader.exec_module(app)

    def damaged(*args: Any) -> Any:
        raise MemoryError

    shown = app.guarded(damaged)()[1]
    status = str(getattr(shown, "value", shown))
    assert "damaged" in status and "declare arrays far larger than the file" in status
