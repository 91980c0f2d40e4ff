"""`python -m weights`: every subcommand is listed and explains itself."""
import subprocess
import sys
from pathlib import Path

import pytest

from weights.__main__ import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["list", "download", "prepare-base", "export", "infer"]


def test_module_help_lists_the_subcommands():
    result = subprocess.run([sys.executable, "-m", "weights", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command, phrase", [
    ("list", "sha1"), ("download", "Range"), ("prepare-base", "fc6"),
    ("export", "opset 17"), ("infer", "argmax")])
def test_each_subcommand_has_its_own_help(command, phrase, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert phrase in " ".join(capsys.readouterr().out.split())


def test_list_shows_urls_and_unknown_checksums(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel" in out
    assert "VGG_ILSVRC_16_layers.caffemodel" in out
    assert "sha1 unknown" in out and "c449ea74dd7d83751d1357d6a8c323fcf4038962" in out


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["download", "no-such-model", "--dir", str(tmp_path)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no weights named 'no-such-model'") and "Traceback" not in err


def test_prepare_base_names_a_missing_weights_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["prepare-base", "vgg16", "--weights", str(tmp_path / "missing.caffemodel"),
              "--dir", str(tmp_path / "out"), "--nets-dir", str(tmp_path / "nets")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert f"--weights {tmp_path / 'missing.caffemodel'}: no such file" in err
    assert "registry" in err and "Traceback" not in err
    assert sorted(tmp_path.iterdir()) == []  # nothing written
