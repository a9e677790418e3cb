"""`knowledge-retention evaluate`: one path for every task; several --student write the comparison; --verdict;
a flag the task cannot use is refused (exit 2, naming the flag), never silently dropped."""

from __future__ import annotations

import json
from pathlib import Path

import lm_fixtures as lm_fx
import numpy as np
import pytest
import text_fixtures as bert_fx

from knowledge_retention.cli import EXIT_OK, EXIT_USAGE, main

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_report")
    tok = bert_fx.bert_tokenizer()
    for name, model in (("teacher", bert_fx.tiny_bert(3, 48, seed=0)), ("s1", bert_fx.tiny_bert(1, 16, seed=1)),
                        ("s2", bert_fx.tiny_bert(2, 32, seed=2)), ("ft", bert_fx.tiny_bert(2, 32, seed=3))):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    texts = bert_fx.sentences(30, seed=5)
    labels = np.random.default_rng(5).integers(0, 2, size=30)
    (root / "data.csv").write_text("sentence,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels, strict=True)))
    lm_tok = lm_fx.tokenizer(bos=True, pad=None)
    for name, model in (("lm_teacher", lm_fx.tiny_gpt2(layers=2, seed=21)), ("lm_student", lm_fx.tiny_gpt2(layers=1, seed=22)),
                        ("lm_ft", lm_fx.tiny_gpt2(layers=1, seed=23))):
        model.float().save_pretrained(root / name)
        lm_tok.save_pretrained(root / name)
    (root / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lm_fx.sentences(9, seed=9)))
    return root


def _classifier(root: Path, *extra: str) -> list[str]:
    return ["evaluate", "--teacher", str(root / "teacher"), "--dataset", str(root / "data.csv"), "--split", "data",
            "--label-column", "label", "--no-latency", "--quiet", *extra]


def _lm(root: Path, *extra: str) -> list[str]:
    return ["evaluate", "--task", "causal-lm", "--teacher", str(root / "lm_teacher"), "--student",
            str(root / "lm_student"), "--dataset", str(root / "texts.jsonl"), "--text-column", "text", "--quiet", *extra]


def test_several_students_write_the_comparison(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    argv = _classifier(saved, "--student", str(saved / "s1"), "--student", f"two={saved / 's2'}", "--baseline-student",
                       str(saved / "ft"), "--bootstrap", "30", "--verdict", "article", "--output-dir", str(out))
    assert main(argv) == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "comparison" and report["verdict_preset"] == "article"
    assert [r["name"] for r in report["students"]] == ["s1", "two", "baseline"]
    assert report["three_way"]["baseline"] == "baseline" and "Three-way check" in report["three_way"]["sentence"]
    assert (out / "s1" / "report.json").is_file() and (out / "tradeoff_front.png").is_file()
    assert report["reports"]["two"]["verdict"]["preset"] == "article"
    stdout = capsys.readouterr().out
    assert "Best KRS:" in stdout and "two" in stdout


def test_verdict_preset_flag_and_other_presets(saved: Path, tmp_path: Path) -> None:
    out = tmp_path / "one"
    assert main(_classifier(saved, "--student", str(saved / "s1"), "--bootstrap", "0", "--verdict", "cost-sensitive",
                            "--output-dir", str(out))) == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"]["preset"] == "cost-sensitive"
    assert set(report["verdict"]["other_presets"]) == {"default", "article", "safety-critical"}
    assert "(cost-sensitive preset)" in (out / "report.md").read_text()


def test_unknown_preset_and_taken_names_are_usage_errors(saved: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(_classifier(saved, "--student", str(saved / "s1"), "--verdict", "lenient"))
    assert exc.value.code == EXIT_USAGE
    argv = _classifier(saved, "--student", str(saved / "s1"), "--student", str(saved / "s1"), "--output-dir", str(tmp_path))
    assert main(argv) == EXIT_USAGE
    assert "the name 's1' is taken" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "flag"), [
    (("--pooling", "mean"), "--pooling"),
    (("--pooling", "cls"), "--pooling"),
    (("--label-column", "text"), "--label-column"),
])
def test_causal_lm_refuses_flags_it_cannot_use(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               extra: tuple[str, ...], flag: str) -> None:
    assert main(_lm(saved, *extra, "--output-dir", str(tmp_path / "r"))) == EXIT_USAGE
    err = capsys.readouterr().err
    assert flag in err and "causal-lm" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "report.json").exists()


@pytest.mark.parametrize(("extra", "flag"), [(("--prompt-column", "p"), "--prompt-column"),
                                             (("--generate-tokens", "3"), "--generate-tokens")])
def test_classifier_refuses_causal_lm_flags(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            extra: tuple[str, ...], flag: str) -> None:
    assert main(_classifier(saved, "--student", str(saved / "s1"), *extra, "--output-dir", str(tmp_path))) == EXIT_USAGE
    assert flag in capsys.readouterr().err


def test_causal_lm_bootstrap_is_honoured_or_refused_by_name(saved: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """An explicit --bootstrap for a causal LM gives intervals when the engine keeps the arrays, else exit 2
    naming --bootstrap: never a report that silently lacks them."""
    code = main(_lm(saved, "--bootstrap", "20", "--output-dir", str(tmp_path / "b")))
    if code == EXIT_USAGE:
        assert "--bootstrap 20" in capsys.readouterr().err
    else:
        assert code == EXIT_OK
        assert json.loads((tmp_path / "b" / "report.json").read_text())["uncertainty"] is not None


def test_causal_lm_report_has_the_one_schema_and_the_baseline(saved: Path, tmp_path: Path) -> None:
    from knowledge_retention.reporting import PAIR_KEYS

    out = tmp_path / "lm"
    assert main(_lm(saved, "--baseline-student", str(saved / "lm_ft"), "--output-dir", str(out))) == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    assert tuple(report) == PAIR_KEYS and report["kind"] == "pair" and report["headline"]["task"] == "causal-lm"
    assert report["verdict"]["decided_by"] == "krs" and report["verdict"]["preset"] == "default"
    assert report["verdict"]["other_presets"]["article"]["level"] is None  # needs accuracy retention: said, not null
    assert "gold labels" in report["verdict"]["other_presets"]["article"]["reason"]
    assert report["alpha_sensitivity"] is not None and report["layers"]["cross_layer_cka"] is not None
    assert report["quality"]["retained"]["perplexity"] == pytest.approx(report["tokens"]["perplexity_ratio"])
    assert report["efficiency"]["speed_source"] == "extraction timings" and report["tradeoff"]["speedup"] > 0
    assert report["baseline"]["comparison"]["krs"] is not None  # --baseline-student is no longer dropped
    for key, value in report.items():  # every null section says why
        if value is None and key in report["absent"]:
            assert report["absent"][key]
    assert report["uncertainty"] is not None or "keep_arrays" in report["absent"]["uncertainty"]
    md = (out / "report.md").read_text()
    assert "## What this report does not have, and why" in md and "Token-level agreement" in md
    assert {p.name for p in out.glob("*.png")} >= {"agreement_by_position.png", "cross_layer_cka.png",
                                                   "alpha_sensitivity.png"}
