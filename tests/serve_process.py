"""`tally serve` as a real child process, for the HTTP tests that need more than one server or
a server that outlives its database's restart.

`serve(db, log)` starts `python -m tally.cli serve` on a free 127.0.0.1 port, waits for
`/healthz` and kills the process on exit, whatever happened. `provision(db, ledger)` makes
the ledger and an admin key with the CLI, as an operator would.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from conftest import run_module, subprocess_env

START_TIMEOUT_S = 60  # a few seconds at worst, on a loaded machine; a bound on a hang
STOP_TIMEOUT_S = 10
START_ATTEMPTS = 3  # a free port may be taken between probing it and the server binding it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def provision(db: str, ledger: str) -> str:
    """Create `ledger` on `db` and return the secret of a fresh admin key for it."""
    made = run_module("tally.cli", "ledger", "create", ledger, "--db", db)
    assert made.returncode == 0, made.describe()
    issued = run_module(
        "tally.cli", "key", "create", "--ledger", ledger, "--scope", "admin", "--json", "--db", db
    )
    assert issued.returncode == 0, issued.describe()
    secret: str = issued.json()["key"]
    return secret


def verify_cli(db: str, ledger: str) -> tuple[int, str]:
    """`tally verify --db DB --ledger LEDGER --json`: (exit status, stdout + stderr)."""
    done = run_module("tally.cli", "verify", "--db", db, "--ledger", ledger, "--json")
    return done.returncode, done.describe()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def serve(db: str, log: Path, *extra: str) -> Iterator[Server]:
    """A `tally serve --db DB` child process on a free port, killed on exit."""
    for _attempt in range(START_ATTEMPTS):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("ab") as sink:
            command = [sys.executable, "-m", "tally.cli", "serve", "--db", db]
            command += ["--host", "127.0.0.1", "--port", str(port), *extra]
            process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=subprocess_env()
            )
        server = Server(url=url, process=process, log=log)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            healthy = False
            while server.alive() and time.monotonic() < deadline and not healthy:
                healthy = _healthy(url)
                if not healthy:
                    time.sleep(0.05)
            if not server.alive():
                continue  # most likely the port was taken meanwhile: try another one
            # Once answered is enough: asking again could time out on a loaded machine.
            assert healthy, f"tally serve did not answer /healthz\n{server.log_tail()}"
            yield server
            return
        finally:
            _stop(process)
    raise AssertionError(f"tally serve did not start in {START_ATTEMPTS} attempts\n{log}")
