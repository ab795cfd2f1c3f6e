"""The command line turns bad input into one clear line on stderr and exit status 2, before any work is done."""

from __future__ import annotations

import pytest

from hf_recurrent.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "x", "--model", "/no/such/model"], "--model '/no/such/model': no such folder"),
        (["train", "--arch", "nosuch", "--data", "x", "--out", "y"], "unknown --arch 'nosuch'; choose one of gla"),
    ],
)
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_folder_without_a_model(tmp_path, capsys):
    assert main(["generate", "x", "--model", str(tmp_path)]) == 2
    assert f"cannot load a model and its tokenizer from {str(tmp_path)!r}" in capsys.readouterr().err


def test_training_data_problems(tmp_path, capsys):
    assert main(["train", "--arch", "gla", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "tiny.txt").write_text("abc")
    assert main(["train", "--arch", "gla", "--data", str(tmp_path / "tiny.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "fewer than one block of 512" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--max-new-tokens", "-3", "-3 is outside [1, inf)"),
        ("--top-p", "0", "0 is outside (0, 1]"),
        ("--top-p", "1.5", "1.5 is outside (0, 1]"),
        ("--temperature", "-1", "-1 is outside [0, inf)"),
        ("--top-k", "two", "expected an integer, got 'two'"),
    ],
)
def test_generation_options_are_checked(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "x", option, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
