"""Shared fixtures: a fresh database path, an engine that closes itself, and CLI runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tally.bootstrap import open_engine
from tally.engine.engine import Engine

SUBPROCESS_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class Run:
    """What a finished subprocess left behind."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The stdout parsed as JSON (for commands run with --json)."""
        return json.loads(self.stdout)

    def describe(self) -> str:
        return (
            f"{' '.join(self.args)} exited {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


def subprocess_env() -> dict[str, str]:
    """The environment for child processes: wide, plain terminal output; no TALLY_DB leak."""
    env = dict(os.environ)
    env.pop("TALLY_DB", None)
    env["COLUMNS"] = "200"
    env["NO_COLOR"] = "1"
    env["TERM"] = "dumb"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run_module(module: str, *args: str, cwd: Path | None = None) -> Run:
    """Run `python -m module args...` with this interpreter and capture its output."""
    command = (sys.executable, "-m", module, *args)
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
        env=subprocess_env(),
        cwd=cwd,
    )
    return Run(args=command, returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)


TallyRunner = Callable[..., Run]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a SQLite file that does not exist yet."""
    return tmp_path / "ledger.db"


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    """An engine on `db_path`; its writers and store connections are closed afterwards."""
    opened = open_engine(db_path)
    try:
        yield opened
    finally:
        opened.close()
        opened.store.close()


@pytest.fixture
def tally(tmp_path: Path) -> TallyRunner:
    """Run the `tally` CLI as a subprocess: `tally("verify", "--db", str(path), "--json")`."""

    def run(*args: str) -> Run:
        return run_module("tally.cli", *args, cwd=tmp_path)

    return run


@pytest.fixture
def tally_audit(tmp_path: Path) -> TallyRunner:
    """Run the independent verifier `tally-audit` as a subprocess."""

    def run(*args: str) -> Run:
        return run_module("tally_audit", *args, cwd=tmp_path)

    return run
