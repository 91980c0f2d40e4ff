"""`python -m bench` refuses option values it cannot honour before any
section runs."""
import pytest

from bench.__main__ import main


@pytest.mark.parametrize("rounds", ["0", "-2"])
def test_rounds_below_one_are_refused(rounds, capsys, tmp_path):
    out = tmp_path / "results.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "host_memory", "--rounds", rounds, "--json", str(out)])
    assert exit_info.value.code == 2
    assert f"--rounds must be at least 1, not {rounds}" in capsys.readouterr().err
    assert not out.exists()
