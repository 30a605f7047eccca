"""Shared fixtures: a fresh database on each store, an engine that closes itself, CLI runners.

`db` is the contract fixture: every test that takes it (directly or through `engine`) runs
once on a SQLite file and once on a fresh PostgreSQL database (decision 8 of the design:
the two stores behave identically). `db_path` stays for what is about the SQLite file itself.
"""

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
from hypothesis import HealthCheck, settings

import forkserver
from forkserver import ForkServer
from pg import fresh_database
from rawdb import is_postgres
from tally.bootstrap import open_engine, open_store
from tally.cli.export import write_export
from tally.engine.engine import Engine
from tally_audit import Report, verify_export, verify_sqlite

SUBPROCESS_TIMEOUT_S = 60

# Hypothesis times each example (200 ms by default) and the generation of the first ones;
# on a loaded CI machine either can run over with nothing wrong. What the properties prove
# does not depend on speed, and pytest-timeout still bounds a hang.
settings.register_profile("tally", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tally")


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


STORES = ("sqlite", "postgresql")


@pytest.fixture(params=STORES, ids=STORES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database tally has not touched yet: a SQLite path, or the URL of a fresh PostgreSQL one."""
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
    else:
        with fresh_database() as url:
            yield url


@pytest.fixture
def engine(db: str) -> Iterator[Engine]:
    """An engine on `db`; its writers and store connections are closed afterwards."""
    opened = open_engine(db)
    try:
        yield opened
    finally:
        opened.close()
        opened.store.close()


@pytest.fixture(scope="session")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer | None]:
    """This test process's zygote for `tally` runs (tests/forkserver.py), or None with
    TALLY_TESTS_FORK=0 (real subprocesses)."""
    if os.environ.get("TALLY_TESTS_FORK") == "0":
        yield None
        return
    with forkserver.started(subprocess_env(), tmp_path_factory.mktemp("zygote")) as server:
        yield server


def run_tally(fork_server: ForkServer | None, cwd: Path, *args: str) -> Run:
    """`python -m tally.cli args...` in `cwd`: forked from the zygote, or a real subprocess."""
    if fork_server is None:
        return run_module("tally.cli", *args, cwd=cwd)
    code, stdout, stderr = fork_server.run(
        "tally.cli", args, cwd=cwd, env=subprocess_env(), timeout=SUBPROCESS_TIMEOUT_S
    )
    command = (sys.executable, "-m", "tally.cli", *args)
    return Run(args=command, returncode=code, stdout=stdout, stderr=stderr)


@pytest.fixture
def tally(tmp_path: Path, fork_server: ForkServer | None) -> TallyRunner:
    """Run the `tally` CLI in a process of its own: `tally("verify", "--db", str(path),
    "--json")`."""

    def run(*args: str) -> Run:
        return run_tally(fork_server, tmp_path, *args)

    return run


@pytest.fixture
def tally_audit(tmp_path: Path) -> TallyRunner:
    """Run the independent verifier `tally-audit` as a subprocess."""

    def run(*args: str) -> Run:
        return run_module("tally_audit", *args, cwd=tmp_path)

    return run


Auditor = Callable[..., Run]


@pytest.fixture
def audit(tally: TallyRunner, tally_audit: TallyRunner, tmp_path: Path) -> Auditor:
    """`audit(db, ledger, *options)`: the offline auditor on `db`. A SQLite file is audited
    as it is (`tally-audit FILE`); a PostgreSQL ledger through `tally export` (`tally-audit
    FILE.jsonl`)."""

    def run(db: str, ledger: str, *options: str) -> Run:
        if not is_postgres(db):
            return tally_audit(db, *options)
        out = tmp_path / f"{ledger}.jsonl"
        out.unlink(missing_ok=True)
        exported = tally("export", "--db", db, "--ledger", ledger, "--out", str(out))
        if exported.returncode != 0:
            return exported
        return tally_audit(str(out), *options)

    return run


def audit_offline(db: str, ledger: str, directory: Path) -> Report:
    """The offline auditor's report on `ledger`, in-process: the SQLite file read as it is, or
    a PostgreSQL ledger exported (as `tally export` does) to a file in `directory` first."""
    if not is_postgres(db):
        (report,) = verify_sqlite(db, ledger)
        return report
    out = directory / f"{ledger}.jsonl"
    store = open_store(db)
    try:
        with out.open("w", encoding="utf-8") as stream:
            assert write_export(store, ledger, stream) is not None, f"no ledger {ledger}"
    finally:
        store.close()
    (report,) = verify_export(str(out), ledger)
    out.unlink()
    return report
