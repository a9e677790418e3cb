"""A local model path that does not exist is named as such, not as a malformed Hub repo id."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from knowledge_retention.cli import main  # noqa: E402
from knowledge_retention.extraction.inputs import load_model  # noqa: E402


@pytest.mark.parametrize("path", ["/no/such/model", "./missing", "~/missing-model", "a/b/c"])
def test_missing_local_folder_is_one_plain_sentence(path: str) -> None:
    with pytest.raises(FileNotFoundError, match=r"^`teacher`: there is no model folder at .*\.$") as err:
        load_model(path, "teacher")
    assert "Repo id" not in str(err.value) and "repo_type" not in str(err.value)


def test_cli_says_which_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.tsv"
    data.write_text("sentence\tlabel\nok\t1\nbad\t0\n", encoding="utf-8")
    code = main(["evaluate", "--teacher", str(tmp_path / "nothing"), "--student", str(tmp_path / "x"),
                 "--dataset", str(data), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3 and f"`--teacher`: there is no model folder at {tmp_path / 'nothing'}." in err
    assert "Repo id" not in err
