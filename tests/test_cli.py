"""The ``knowledge-retention`` command line: values against the library, exit codes and messages."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import text_fixtures as fx

from knowledge_retention import compute_krs
from knowledge_retention.cli import EXIT_LOAD, EXIT_OK, EXIT_USAGE, build_parser, main


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.normal(size=(64, 12))
    s = t @ rng.normal(size=(12, 8)) + 0.3 * rng.normal(size=(64, 8))
    tl, sl = rng.normal(size=(64, 3)), rng.normal(size=(64, 3))
    path = tmp_path / "arrays.npz"
    np.savez(path, teacher_features=t, student_features=s, teacher_logits=tl, student_logits=sl)
    return path, (t, s, tl, sl)


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("task", ["classification", "nlp"])
def test_arrays_equals_compute_krs(arrays, capsys, task):
    path, (t, s, tl, sl) = arrays
    assert main(["arrays", str(path), "--json", "--task", task]) == EXIT_OK
    out = _json_out(capsys)
    expected = compute_krs(t, s, tl, sl, task=task)
    for key in ("krs", "fss", "aoag", "alpha", "beta"):
        assert out[key] == pytest.approx(expected[key], abs=1e-12), key


def test_arrays_options_and_layer_stacks(tmp_path, arrays, capsys):
    _, (t, s, tl, sl) = arrays
    path = tmp_path / "layers.npz"
    np.savez(path, teacher_features=np.stack([t, 2 * t], axis=1), student_features=np.stack([s, s], axis=1),
             teacher_outputs=tl, student_outputs=sl)
    assert main(["arrays", str(path), "--json", "--alpha", "0.2", "--beta", "0.8", "--aoag-method", "js",
                 "--fss-method", "debiased_cka", "--temperature", "2"]) == EXIT_OK
    out = _json_out(capsys)
    expected = compute_krs([t, 2 * t], [s, s], tl, sl, alpha=0.2, beta=0.8, aoag_method="js",
                           fss_method="debiased_cka", temperature=2.0)
    assert out["krs"] == pytest.approx(expected["krs"], abs=1e-12)
    assert out["alpha"] == 0.2 and out["aoag_method"] == "js"


def test_arrays_safetensors_and_text_output(tmp_path, arrays, capsys):
    from safetensors.numpy import save_file

    _, (t, s, tl, sl) = arrays
    path = tmp_path / "a.safetensors"
    save_file({"teacher_features": t, "student_features": s, "teacher_logits": tl, "student_logits": sl}, str(path))
    assert main(["arrays", str(path)]) == EXIT_OK
    text = capsys.readouterr().out
    assert text.startswith("KRS ") and f"{compute_krs(t, s, tl, sl)['krs']:.4f}" in text


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, [], "no such file"),
        ("txt", [], "unsupported file type '.txt'"),
        ("missing", [], "missing array 'student_features'"),
        ("pickle", [], "without unpickling"),
        ("probs", ["--inputs", "logits"], "probabilities"),
        ("nan", [], "NaN"),
        ("short", [], "`teacher_features`: 63, `student_features`: 64"),
        ("ok", ["--alpha", "0.3", "--beta", "0.3"], "`--alpha` + `--beta` must equal 1"),
    ],
)
def test_arrays_user_errors_exit_2_with_a_message(tmp_path, arrays, capsys, make, args, message):
    _, (t, s, tl, sl) = arrays
    path = tmp_path / "bad.npz"
    if make == "txt":
        path = tmp_path / "bad.txt"
        path.write_text("x")
    elif make == "missing":
        np.savez(path, teacher_features=t, teacher_logits=tl, student_logits=sl)
    elif make == "pickle":
        obj = np.empty(1, dtype=object)
        obj[0] = {"a": 1}
        np.savez(path, teacher_features=obj, student_features=s, teacher_logits=tl, student_logits=sl)
    elif make == "probs":
        p = np.exp(tl) / np.exp(tl).sum(axis=1, keepdims=True)
        np.savez(path, teacher_features=t, student_features=s, teacher_logits=p, student_logits=p)
    elif make == "nan":
        bad = t.copy()
        bad[3, 2] = np.nan
        np.savez(path, teacher_features=bad, student_features=s, teacher_logits=tl, student_logits=sl)
    elif make == "short":
        np.savez(path, teacher_features=t[:-1], student_features=s, teacher_logits=tl, student_logits=sl)
    elif make == "ok":
        np.savez(path, teacher_features=t, student_features=s, teacher_logits=tl, student_logits=sl)
    assert main(["arrays", str(path), *args]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("knowledge-retention: error:") and message.lower() in err.lower()
    assert "Traceback" not in err


def _damaged(path: Path, good: Path, how: str) -> Path:
    data = good.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "corrupted":  # a flipped byte: in the zip member's data (CRC) / in the JSON header
        broken = bytearray(data)
        broken[len(data) // 3 if path.suffix == ".npz" else 20] ^= 0xFF
        path.write_bytes(bytes(broken))
    elif how == "text":
        path.write_text("teacher_features,student_features\n0.1,0.2\n")
    elif how == "other-format":  # an .npz saved under the other name, and the reverse
        path.write_bytes(good.with_suffix(".safetensors" if path.suffix == ".npz" else ".npz").read_bytes())
    return path


@pytest.mark.parametrize("how", ["truncated", "empty", "corrupted", "text", "other-format"])
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_damaged_or_mislabelled_files_exit_2_saying_what_the_file_is_not(tmp_path, arrays, capsys, suffix, how):
    from safetensors.numpy import save_file

    path_npz, (t, s, tl, sl) = arrays
    save_file({"teacher_features": t, "student_features": s, "teacher_logits": tl, "student_logits": sl},
              str(path_npz.with_suffix(".safetensors")))
    bad = _damaged(tmp_path / f"bad{suffix}", path_npz.with_suffix(suffix), how)
    assert main(["arrays", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    kind = "not a valid .npz (zip) archive" if suffix == ".npz" else "not a valid .safetensors file"
    assert lines[0].startswith(f"knowledge-retention: error: {bad}: {kind}"), err
    assert "pickle" not in err.lower() and "bfloat16" not in err.lower()
    if how == "text":
        assert "text file" in err
    if how == "empty":
        assert "empty" in err


def test_errors_name_the_flags_the_user_typed(tmp_path, arrays, capsys):
    _, (t, s, tl, sl) = arrays
    p = np.exp(tl) / np.exp(tl).sum(axis=1, keepdims=True)
    path = tmp_path / "probs.npz"
    np.savez(path, teacher_features=t, student_features=s, teacher_logits=p, student_logits=p)
    assert main(["arrays", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--inputs probabilities" in err and "inputs=" not in err
    assert main(["arrays", str(path), "--alpha", "0.3", "--beta", "0.3", "--inputs", "probabilities"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "`--alpha` + `--beta` must equal 1" in err and len(err.strip().splitlines()) == 1


def test_flag_translation_is_one_rule():
    from knowledge_retention.cli import as_flags
    from knowledge_retention.cli.main import _flags_of

    flags = _flags_of(build_parser(), "arrays")
    assert flags["fss_method"] == "--fss-method" and flags["inputs"] == "--inputs"
    assert as_flags("`fss_method` must be one of ['cosine'], got 'x'.", flags) == \
        "`--fss-method` must be one of ['cosine'], got 'x'."
    assert as_flags('Pass inputs="logits" or temperature=2.', flags) == "Pass --inputs logits or --temperature 2."
    assert as_flags("`teacher_features` has NaN", flags) == "`teacher_features` has NaN"  # an array key, not a flag


def test_only_the_package_s_input_errors_are_the_user_s_fault(arrays, monkeypatch, capsys):
    """A ValueError/TypeError from a bug is exit 1 with its stack trace, not a usage error."""
    import knowledge_retention.score as score
    from knowledge_retention.cli import EXIT_ERROR

    path, _ = arrays
    for bug in (ValueError("operands could not be broadcast"), TypeError("unsupported operand"), KeyError("x")):
        def broken(*args, _bug=bug, **kwargs):
            raise _bug

        monkeypatch.setattr(score, "compute_krs", broken)
        assert main(["arrays", str(path)]) == EXIT_ERROR
        err = capsys.readouterr().err
        assert "Traceback" in err and "a bug" in err


@pytest.mark.parametrize(
    "argv",
    [["arrays", "x.npz", "--alpha", "1.5"], ["evaluate", "--teacher", "t", "--student", "s", "--dataset", "d",
                                              "--layers", "0:0,6"], ["evaluate", "--batch-size", "0"]],
)
def test_bad_arguments_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == EXIT_USAGE
    assert "error:" in capsys.readouterr().err


def test_layers_argument_forms():
    parser = build_parser()
    base = ["evaluate", "--teacher", "t", "--student", "s", "--dataset", "d"]
    assert parser.parse_args([*base, "--layers", "uniform"]).layers == "uniform"
    assert parser.parse_args([*base, "--layers", "0:0,4:2"]).layers == [(0, 0), (4, 2)]


# --- on tiny models -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tok = fx.bert_tokenizer()
    for name, model in (("teacher", fx.tiny_bert(num_layers=4, hidden=48)), ("student", fx.tiny_bert(2, 32, seed=3)),
                        ("baseline", fx.tiny_bert(2, 32, seed=4))):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    texts = fx.sentences(40, seed=5)
    labels = np.random.default_rng(5).integers(0, 2, size=40)
    csv = root / "data.csv"
    csv.write_text("sentence,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels, strict=True)))
    tsv_dir = root / "sst2"
    tsv_dir.mkdir()
    (tsv_dir / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True)))
    return root, texts, labels


def test_evaluate_writes_the_report_with_the_library_s_numbers(saved_pair, tmp_path, capsys):
    from knowledge_retention.extraction import evaluate_pair

    root, texts, labels = saved_pair
    out = tmp_path / "report"
    argv = ["evaluate", "--teacher", str(root / "teacher"), "--student", str(root / "student"),
            "--baseline-student", str(root / "baseline"), "--dataset", str(root / "data.csv"), "--label-column",
            "label", "--split", "data", "--bootstrap", "50", "--no-latency", "--quiet", "--output-dir", str(out),
            "--layers", "uniform", "--batch-size", "7"]
    assert main(argv) == EXIT_OK
    stdout = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    direct = evaluate_pair(str(root / "teacher"), str(root / "student"), texts, layers="uniform", progress=False)
    assert report["headline"]["krs"] == pytest.approx(direct.krs, abs=1e-6)
    assert f"KRS {direct.krs:.3f}" in stdout
    assert (out / "report.md").is_file() and any(out.glob("*.png"))
    run = report["options"]["run"]
    assert run["teacher"] == str(root / "teacher") and run["output_dir"] == str(out) and run["layers"] == "uniform"
    assert report["baseline"] is not None


def test_evaluate_load_errors_exit_3(saved_pair, tmp_path, capsys):
    root, _, _ = saved_pair
    argv = ["evaluate", "--teacher", str(tmp_path / "nope"), "--student", str(root / "student"), "--dataset",
            str(root / "data.csv"), "--split", "data", "--bootstrap", "0", "--no-latency", "--quiet",
            "--output-dir", str(tmp_path / "r")]
    assert main(argv) == EXIT_LOAD
    assert "nope" in capsys.readouterr().err
    bad = tmp_path / "data.xml"
    bad.write_text("<x/>")
    argv = ["evaluate", "--teacher", str(root / "teacher"), "--student", str(root / "student"), "--dataset", str(bad)]
    assert main(argv) == EXIT_USAGE
    assert "--dataset: unsupported file type '.xml'" in capsys.readouterr().err


def test_main_job_runs_on_the_default_pair(saved_pair, tmp_path, monkeypatch, capsys):
    """No arguments = the main job; the default pair (trained on first use) is replaced by tiny models."""
    import knowledge_retention.cli.commands as cli  # where the main job's helpers live
    import knowledge_retention.distillation.defaults as defaults

    root, _, labels = saved_pair
    calls = []

    def fake_pair(*args, **kwargs):
        calls.append(kwargs)
        return {"teacher": str(root / "teacher"), "student": str(root / "student"), "baseline": str(root / "baseline")}

    monkeypatch.setattr(defaults, "ensure_default_pair", fake_pair)
    monkeypatch.setattr(cli, "_default_pair_missing", lambda: False)  # the fake pair is "cached": no train.tsv needed
    monkeypatch.setenv("HOME", str(root))  # the pair lives under "home", as the real one in ~/.cache does
    out = tmp_path / "krs_report"
    sst2_before = os.environ.get("SST2_DIR")
    assert main(["--sst2-dir", str(root / "sst2"), "--max-examples", "30", "--bootstrap", "0", "--no-latency",
                 "--quiet", "--output-dir", str(out)]) == EXIT_OK
    assert calls == [{"progress": False}]
    assert os.environ.get("SST2_DIR") == sst2_before  # --sst2-dir is not left in the caller's environment
    text = (out / "report.json").read_text()
    report = json.loads(text)
    assert report["num_examples"] == 30 and report["has_labels"]
    assert report["models"]["teacher"] == "~/teacher" and report["baseline"]["model"] == "~/baseline"
    assert str(root) not in text and str(root) not in (out / "report.md").read_text()  # committed reports: no /root/...
    assert report["headline"]["alpha"] == 0.5 and 0.0 <= report["headline"]["krs"] <= 1.0
    assert report["quality"]["teacher"]["accuracy"] is not None
    assert report["baseline"]["comparison"] is not None  # the distill-vs-fine-tune check ran
    assert "Main job" in capsys.readouterr().out


@pytest.fixture
def no_hub(monkeypatch):
    """Any Hub dataset call fails the test: local mistakes must be refused before it."""
    import datasets

    def refuse(*args, **kwargs):
        raise AssertionError(f"the Hub was tried: load_dataset{args}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    return monkeypatch


@pytest.mark.parametrize("spec", ["dev.tsv", "data/dev.csv", "./sst2", "runs/a/b", "~/nowhere/x.parquet", "notes.txt"])
def test_a_missing_local_dataset_is_no_such_file_at_once(spec, tmp_path, no_hub, capsys):
    no_hub.chdir(tmp_path)
    assert main(["evaluate", "--teacher", "t", "--student", "s", "--dataset", spec]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--dataset {spec}: no such file" in err and len(err.strip().splitlines()) == 1


def test_a_hub_name_still_goes_to_the_hub(tmp_path, monkeypatch, capsys):
    import datasets

    calls = []

    def offline(name, *args, **kwargs):
        calls.append(name)
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--teacher", "t", "--student", "s", "--dataset", "stanfordnlp/sst2"]) == EXIT_LOAD
    assert calls == ["stanfordnlp/sst2"] and "could not be loaded" in capsys.readouterr().err


@pytest.fixture
def main_job_without_data(tmp_path, no_hub):
    """The main job where no SST-2 folder exists and the default pair is not trained yet (nothing may run)."""
    import knowledge_retention.cli.commands as cli  # where the main job's helpers live
    import knowledge_retention.distillation.data as data
    import knowledge_retention.distillation.defaults as defaults

    def refuse(*args, **kwargs):
        raise AssertionError("the default pair was built before the data was checked")

    no_hub.setattr(defaults, "ensure_default_pair", refuse)
    no_hub.setattr(data, "default_sst2_dir", lambda: tmp_path / "no-shared-data")
    no_hub.setattr(cli, "_default_pair_missing", lambda: True)
    no_hub.delenv("SST2_DIR", raising=False)
    return no_hub


def test_main_job_without_sst2_data_says_where_to_put_it(main_job_without_data, capsys):
    main_job_without_data.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--quiet"]) == EXIT_LOAD
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "HF_HUB_OFFLINE is set" in err
    for needed in ("--sst2-dir", "SST2_DIR", "dev.tsv", "train.tsv"):
        assert needed in err, needed


def test_main_job_without_sst2_data_and_an_unreachable_hub(main_job_without_data, capsys):
    import socket

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        main_job_without_data.delenv(name, raising=False)

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    main_job_without_data.setattr(socket, "create_connection", no_network)
    assert main(["--quiet"]) == EXIT_LOAD
    err = capsys.readouterr().err
    assert "unreachable" in err and "--sst2-dir" in err and "SST2_DIR" in err


def test_main_job_blames_the_flag_or_the_variable_that_was_given(main_job_without_data, tmp_path, capsys):
    main_job_without_data.setenv("SST2_DIR", str(tmp_path))  # a real folder: the flag must win and be blamed
    assert main(["--sst2-dir", str(tmp_path / "nonexistent"), "--quiet"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"knowledge-retention: error: --sst2-dir {tmp_path / 'nonexistent'}: no such folder")
    assert "SST2_DIR" not in err
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n")
    assert main(["--quiet"]) == EXIT_USAGE  # SST2_DIR holds dev.tsv but the first run also trains
    err = capsys.readouterr().err
    assert f"SST2_DIR {tmp_path}: no train.tsv in that folder" in err


def test_reproduce_sst2_smoke_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "sst2"
    assert main(["reproduce-sst2", "--scale", "smoke", "--students", "pkd", "--output-dir", str(out), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "| PKD |" in stdout and "Table 9" in stdout
    results = json.loads((out / "results.json").read_text())
    assert [(r["name"], r["variant"]) for r in results["students"]] == [("pkd", "before"), ("pkd", "after")]
    assert (out / "checkpoints" / "manifest.json").is_file()


def test_console_script_help_and_debug_flag(tmp_path):
    done = subprocess.run([sys.executable, "-m", "knowledge_retention.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "reproduce-sst2" in done.stdout
    missing = tmp_path / "missing.npz"
    done = subprocess.run([sys.executable, "-m", "knowledge_retention.cli", "arrays", str(missing)],
                          capture_output=True, text=True)
    assert done.returncode == EXIT_USAGE and "Traceback" not in done.stderr
    env = {**__import__("os").environ, "KNOWLEDGE_RETENTION_DEBUG": "1"}
    done = subprocess.run([sys.executable, "-m", "knowledge_retention.cli", "arrays", str(missing)],
                          capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_pickles_are_never_loaded(tmp_path, capsys):
    path = tmp_path / "evil.npz"
    with open(path, "wb") as fh:
        pickle.dump({"teacher_features": 1}, fh)
    assert main(["arrays", str(path)]) == EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_under_torchrun_shards_and_writes_one_report(saved_pair, tmp_path, torchrun):
    """Two CPU processes (gloo; the ``cli`` scenario runs the command line in each): the examples are
    split, the main process writes the same report."""
    root, _, _ = saved_pair
    common = ["evaluate", "--teacher", str(root / "teacher"), "--student", str(root / "student"), "--dataset",
              str(root / "data.csv"), "--split", "data", "--label-column", "label", "--bootstrap", "0",
              "--no-latency", "--quiet", "--batch-size", "3"]
    proc = torchrun("cli", tmp_path / "launch", *common, "--output-dir", str(tmp_path / "dist"))
    assert proc.stdout.count("Report: ") == 1, proc.stdout  # one summary: the main process's
    assert main([*common, "--output-dir", str(tmp_path / "single")]) == EXIT_OK
    dist = json.loads((tmp_path / "dist" / "report.json").read_text())
    single = json.loads((tmp_path / "single" / "report.json").read_text())
    assert dist["num_examples"] == single["num_examples"] == 40
    assert dist["options"]["extraction"].get("num_processes", 2) == 2
    for key in ("krs", "fss", "aoag"):
        assert dist["headline"][key] == pytest.approx(single["headline"][key], rel=1e-6), key
    assert dist["quality"]["student"]["accuracy"] == single["quality"]["student"]["accuracy"]


def test_speed_is_timed_alike_on_a_recording_and_a_replaying_run(saved_pair, tmp_path, capsys):
    """Issue 20: with --teacher-cache the teacher's extraction time is replayed on the second run while the
    student is timed again, so the speed sentence changed between identical runs. Both runs now time both
    models on the same batches (the latency measurement), and say why."""
    root, _, _ = saved_pair
    argv = ["evaluate", "--teacher", str(root / "teacher"), "--student", str(root / "student"), "--dataset",
            str(root / "data.csv"), "--split", "data", "--bootstrap", "0", "--quiet", "--teacher-cache",
            str(tmp_path / "cache")]
    reports = []
    for run in ("record", "replay"):
        assert main([*argv, "--output-dir", str(tmp_path / run)]) == EXIT_OK
        reports.append(json.loads((tmp_path / run / "report.json").read_text()))
    capsys.readouterr()
    assert [r["options"]["extraction"]["teacher_cache"]["reused"] for r in reports] == [False, True]
    for report in reports:
        assert report["efficiency"]["speed_source"] == "measured"
        assert any("the teacher cache is in use" in note for note in report["notes"]), report["notes"]
        assert report["tradeoff"]["speedup"] is not None
