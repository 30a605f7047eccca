"""The README's opening commands stay true: install-and-demo first, then the test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import TallyRunner, subprocess_env

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


def test_the_python_snippet_runs(tmp_path: Path) -> None:
    snippet = re.findall(r"## Python\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert len(snippet) == 1
    done = subprocess.run(
        [sys.executable, "-c", snippet[0]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr
    transaction_id, balance_after = done.stdout.split()
    assert transaction_id.startswith("txn_")
    assert balance_after == "1000"  # 10.00 USD in minor units
