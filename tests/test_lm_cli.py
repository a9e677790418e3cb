"""`knowledge-retention evaluate --task causal-lm`: saved models loaded with from_pretrained, the LM report."""

from __future__ import annotations

import json

import lm_fixtures as fx
import pytest

from knowledge_retention.cli import main
from knowledge_retention.extraction import evaluate_pair


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    tok = fx.tokenizer(bos=True, pad=None)
    for name, model in (("teacher", fx.tiny_gpt2(layers=2, seed=21)), ("student", fx.tiny_gpt2(layers=1, seed=22))):
        model.float().save_pretrained(root / name)
        tok.save_pretrained(root / name)
    texts = fx.sentences(13, seed=9)
    (root / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return root, texts


def test_cli_writes_the_lm_report(saved, tmp_path, capsys):
    root, texts = saved
    out = tmp_path / "report"
    code = main(["evaluate", "--task", "causal-lm", "--teacher", str(root / "teacher"), "--student",
                 str(root / "student"), "--dataset", str(root / "texts.jsonl"), "--text-column", "text",
                 "--output-dir", str(out), "--quiet", "--layers", "all"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    # the same pair by paths through the library: the task is found from the configs (both causal LMs)
    direct = evaluate_pair(str(root / "teacher"), str(root / "student"), texts, layers="all", progress=False)
    assert direct.options["task"] == "causal-lm"
    assert report["headline"]["krs"] == pytest.approx(direct.krs, rel=1e-6)
    assert report["tokens"]["teacher_perplexity"] == pytest.approx(direct.teacher_perplexity, rel=1e-6)
    assert report["lm"]["num_tokens"] == direct.lm["num_tokens"]
    md = (out / "report.md").read_text()
    assert "Token-level agreement" in md and "Where the two disagree most" in md
    assert (out / "agreement_by_position.png").stat().st_size > 1000 and (out / "cross_layer_cka.png").exists()
    assert "top-1" in capsys.readouterr().out


def test_cli_generation_mode(saved, tmp_path):
    root, _ = saved
    out = tmp_path / "gen"
    code = main(["evaluate", "--task", "causal-lm", "--teacher", str(root / "teacher"), "--student",
                 str(root / "student"), "--dataset", str(root / "texts.jsonl"), "--text-column", "text",
                 "--output-dir", str(out), "--quiet", "--generate-tokens", "3"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["lm"]["mode"] == "generated" and report["lm"]["num_tokens"] <= 13 * 3


def test_cli_causal_lm_replays_the_teacher_from_teacher_cache(saved, tmp_path, capsys):
    """The one evaluate path gives a causal-LM pair the teacher cache: the second run replays the teacher
    (same headline), and --generate-tokens with --teacher-cache is refused naming the flag."""
    root, _ = saved
    args = ["evaluate", "--task", "causal-lm", "--teacher", str(root / "teacher"), "--student", str(root / "student"),
            "--dataset", str(root / "texts.jsonl"), "--text-column", "text", "--quiet", "--bootstrap", "0",
            "--teacher-cache", str(tmp_path / "cache")]
    assert main([*args, "--output-dir", str(tmp_path / "first")]) == 0
    assert main([*args, "--output-dir", str(tmp_path / "second")]) == 0
    first, second = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("first", "second"))
    assert second["headline"]["krs"] == pytest.approx(first["headline"]["krs"], abs=1e-12)
    assert "replayed from the teacher cache" in (tmp_path / "second" / "report.md").read_text()
    capsys.readouterr()
    assert main([*args, "--generate-tokens", "2", "--output-dir", str(tmp_path / "gen")]) == 2
    assert "--teacher-cache" in capsys.readouterr().err


def test_cli_teacher_device_map_offloads_the_teacher_with_the_same_numbers(saved, tmp_path, capsys):
    """--teacher-device-map auto --max-memory cpu=1KB --offload-folder DIR: the teacher's blocks go to disk
    (accelerate's big-model inference) and the report's numbers are the in-memory teacher's."""
    root, _ = saved
    args = ["evaluate", "--task", "causal-lm", "--teacher", str(root / "teacher"), "--student", str(root / "student"),
            "--dataset", str(root / "texts.jsonl"), "--text-column", "text", "--quiet", "--bootstrap", "0"]
    assert main([*args, "--output-dir", str(tmp_path / "memory")]) == 0
    assert main([*args, "--output-dir", str(tmp_path / "disk"), "--teacher-device-map", "auto",
                 "--max-memory", "cpu=1KB", "--offload-folder", str(tmp_path / "offload")]) == 0
    # what the flags ask transformers for puts every block of this teacher on disk (safetensors weights are
    # read from the checkpoint itself, so the offload folder may stay empty)
    from transformers import AutoModelForCausalLM

    probe = AutoModelForCausalLM.from_pretrained(root / "teacher", device_map="auto", max_memory={"cpu": "1KB"},
                                                 offload_folder=str(tmp_path / "offload"))
    assert set(probe.hf_device_map.values()) == {"disk"}
    memory, disk = (json.loads((tmp_path / d / "report.json").read_text())["headline"] for d in ("memory", "disk"))
    for key in ("krs", "fss", "aoag"):
        assert disk[key] == memory[key], key
    capsys.readouterr()
    assert main([*args, "--output-dir", str(tmp_path / "bad"), "--max-memory", "cpu=1KB"]) == 2
    assert "--max-memory applies with --teacher-device-map" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: a --max-memory that is not DEVICE=SIZE pairs
        main([*args, "--output-dir", str(tmp_path / "bad"), "--teacher-device-map", "auto", "--max-memory", "cpu"])
    assert exit_info.value.code == 2 and "--max-memory" in capsys.readouterr().err


def test_cli_measures_skip_token_measures_and_are_refused_for_classifiers(saved, tmp_path, capsys):
    root, _ = saved
    args = ["evaluate", "--task", "causal-lm", "--teacher", str(root / "teacher"), "--student", str(root / "student"),
            "--dataset", str(root / "texts.jsonl"), "--text-column", "text", "--quiet", "--bootstrap", "0"]
    assert main([*args, "--output-dir", str(tmp_path / "all")]) == 0
    assert main([*args, "--output-dir", str(tmp_path / "some"), "--measures", "kl,top1"]) == 0
    full, some = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("all", "some"))
    assert some["headline"]["krs"] == full["headline"]["krs"] and some["lm"]["measures"] == ["kl", "top1"]
    assert "skipped (measures=...)" in (tmp_path / "some" / "report.md").read_text()
    capsys.readouterr()
    assert main([*args[:2], "nlp", *args[3:], "--output-dir", str(tmp_path / "nlp"), "--measures", "kl"]) == 2
    assert "--measures" in capsys.readouterr().err
