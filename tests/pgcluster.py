"""A private, throwaway PostgreSQL cluster (initdb on a free port) that tests may restart.

Fault tests must never restart the shared server, so they make their own. As root (CI),
the server runs as the `postgres` system user, which PostgreSQL requires.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(os.environ.get("TALLY_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_postgres(*command: str) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


@dataclass(frozen=True, slots=True)
class Cluster:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres(
                str(BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.data / "server.log"),
                *args,
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        self.pg_ctl(
            "-w",
            "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data}",
            "start",
        )

    def restart_abruptly(self) -> None:
        """Crash-stop (no checkpoint, clients cut off), then start: WAL recovery runs."""
        self.pg_ctl("-w", "-m", "immediate", "stop")
        self.start()


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    if not (BIN / "initdb").exists():
        raise RuntimeError(f"initdb not found in {BIN}; set TALLY_PG_BIN")
    root = Path(tempfile.mkdtemp(prefix="tally-pgcluster-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(
        _as_postgres(str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"),
        check=True,
        capture_output=True,
        timeout=120,
    )
    cluster = Cluster(data, _free_port())
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.pg_ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)
