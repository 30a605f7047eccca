"""The CLI tests' zygote (tests/forkserver.py) gives what a real `python -m tally.cli` gives:
the same exit code, stdout and stderr, command by command, on a database each writes."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import forkserver
from conftest import Run, run_module, run_tally, subprocess_env
from forkserver import ForkServer

# Each: the arguments, after `--db DB` is appended where the command takes one
COMMANDS = (
    ("--help",),
    ("recharge", "alice", "10.00", "USD", "--gateway", "pp", "--key", "r1", "--json"),
    ("recharge", "alice", "10.00", "USD", "--gateway", "pp", "--key", "r2"),
    ("expense", "alice", "USD", "--order", "o-1:2.50", "--key", "e1", "--json"),
    ("expense", "alice", "USD", "--order", "o-2:99.00", "--key", "e2", "--json"),
    ("recharge", "alice", "-1", "USD", "--gateway", "pp", "--key", "r3"),
    ("balance", "alice", "--json"),
    ("statement", "alice", "--currency", "USD"),
    ("verify", "--json"),
    ("no-such-command",),
)
# What differs between two runs of one command: ids, times and hashes made at the time
_VARYING = re.compile(r"txn_[0-9a-z]+|\d{4}-\d\d-\d\dT[0-9:.]+Z|[0-9a-f]{64}|\d+(\.\d+)? ?(ms|s)\b")


def _comparable(run: Run) -> tuple[int, str, str]:
    return run.returncode, _VARYING.sub("*", run.stdout), _VARYING.sub("*", run.stderr)


def _with_db(command: tuple[str, ...], db: Path) -> tuple[str, ...]:
    return (
        command
        if command[0].startswith("--") or command[0] == "no-such-command"
        else (
            *command,
            "--db",
            str(db),
        )
    )


@pytest.fixture
def zygote() -> Iterator[ForkServer]:
    """A zygote of this test's own (whatever TALLY_TESTS_FORK says for the others)."""
    with forkserver.started(subprocess_env()) as server:
        yield server


def test_a_forked_run_is_a_real_run(zygote: ForkServer, tmp_path: Path) -> None:
    forked_db, real_db = tmp_path / "forked.db", tmp_path / "real.db"
    codes = set()
    for command in COMMANDS:
        forked = run_tally(zygote, tmp_path, *_with_db(command, forked_db))
        real = run_module("tally.cli", *_with_db(command, real_db), cwd=tmp_path)
        assert _comparable(forked) == _comparable(real), (forked.describe(), real.describe())
        codes.add(real.returncode)
    assert codes >= {0, 1, 2}, codes  # successes, refusals and usage errors all compared


def test_a_forked_run_in_its_own_directory(zygote: ForkServer, tmp_path: Path) -> None:
    """The working directory is the run's: a relative `--db` lands there."""
    folder = tmp_path / "here"
    folder.mkdir()
    made = run_tally(
        zygote, folder, "recharge", "bob", "1.00", "USD", "--gateway", "pp", "--key", "r1",
        "--db", "relative.db",
    )  # fmt: skip
    assert made.returncode == 0, made.describe()
    assert (folder / "relative.db").exists()


PROBE = """
import os, signal, sys, time
print(sys.path[0] == os.getcwd(), os.environ.get("PROBE_VALUE"), flush=True)
mode = sys.argv[1]
if mode == "os-exit":
    os._exit(3)
elif mode == "signal":
    os.kill(os.getpid(), signal.SIGTERM)
elif mode == "interrupt":
    raise KeyboardInterrupt
elif mode == "exit":
    sys.exit(4)
"""


@pytest.mark.parametrize(
    ("mode", "code"), [("os-exit", 3), ("signal", -15), ("interrupt", -2), ("exit", 4), ("", 0)]
)
def test_a_forked_run_ends_as_a_fresh_process_would(
    zygote: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, code: int
) -> None:
    """The exit code `subprocess` would report (an `os._exit`, death by a signal, SIGINT
    after an uncaught KeyboardInterrupt), `sys.path[0]` the working directory as `python
    -m` has it, and the environment of the request, not the zygote's."""
    (tmp_path / "probe.py").write_text(PROBE)
    monkeypatch.setenv("PROBE_VALUE", "set-after-the-zygote-started")
    real = run_module("probe", mode, cwd=tmp_path)
    forked = zygote.run("probe", (mode,), cwd=tmp_path, env=subprocess_env(), timeout=60)
    assert real.returncode == code, real.describe()
    assert forked[:2] == (code, "True set-after-the-zygote-started\n"), forked
    assert forked[:2] == (real.returncode, real.stdout)
    if mode == "interrupt":
        assert forked[2].rstrip().endswith("KeyboardInterrupt"), forked[2]


def test_a_forked_run_past_its_timeout_is_killed(zygote: ForkServer, tmp_path: Path) -> None:
    (tmp_path / "sleeper.py").write_text(
        "import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        zygote.run("sleeper", (), cwd=tmp_path, env=subprocess_env(), timeout=2)
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 30  # its waiter reaps it
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    (tmp_path / "after.py").write_text("print('ok')\n")
    done = zygote.run("after", (), cwd=tmp_path, env=subprocess_env(), timeout=60)
    assert done == (0, "ok\n", "")


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_a_timed_out_run_leaves_nothing_on_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The client kills the run and hangs up; the run's waiter, which would have sent its
    exit code, then ends quietly (the zygote's stderr is the test process's)."""
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(60)\n")
    with forkserver.started(subprocess_env()) as server:
        with pytest.raises(subprocess.TimeoutExpired):
            server.run("sleeper", (), cwd=tmp_path, env=subprocess_env(), timeout=1)
        zygote = server._process.pid
        deadline = time.monotonic() + 30  # the waiter reaps the run, then leaves
        while _children(zygote) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _children(zygote) == []
    assert "Traceback" not in capfd.readouterr().err


def test_a_socket_path_too_long_in_bytes_gets_a_folder_of_its_own(tmp_path: Path) -> None:
    """Short enough in characters, too long in bytes (a UNIX socket's limit is in bytes):
    the zygote listens in a temporary folder instead, and runs."""
    with tempfile.TemporaryDirectory() as short:  # pytest's tmp_path is too long already
        _listens_elsewhere(Path(short) / ("é" * 40), tmp_path)


def _listens_elsewhere(folder: Path, tmp_path: Path) -> None:
    folder.mkdir()
    assert len(str(folder / "zygote.sock")) <= forkserver._SOCKET_PATH_MAX
    assert len(os.fsencode(folder / "zygote.sock")) > forkserver._SOCKET_PATH_MAX
    (tmp_path / "hello.py").write_text("print('hello')\n")
    with forkserver.started(subprocess_env(), folder) as server:
        assert not server._path.startswith(str(folder))
        done = server.run("hello", (), cwd=tmp_path, env=subprocess_env(), timeout=60)
    assert done == (0, "hello\n", "")
