"""The README's opening commands stay true: install-and-demo first, then the test command."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import TallyRunner

README = Path(__file__).resolve().parents[1] / "README.md"


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)


def test_the_readme_opens_with_install_and_demo_then_the_test_command() -> None:
    first, second = sh_blocks()[:2]
    assert first.strip() == (
        "python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e . "
        "&& .venv/bin/tally demo"
    )
    assert second.strip() == "bash .ci/run"
    ci = (README.parent / ".ci" / "run").read_text()
    assert "pip install -q -c constraints.txt -e '.[dev]'" in ci


def test_the_demo_the_readme_promises(tmp_path: Path, tally: TallyRunner) -> None:
    run = tally("demo")  # like a new user: ./tally.db in the current folder (tmp_path)
    assert run.returncode == 0, run.describe()
    for promised in ("200.00", "150.00", "115.00", "135.00", "verified ledger default"):
        assert promised in run.stdout
    assert (tmp_path / "tally.db").exists()
