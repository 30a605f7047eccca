"""`python -m MODULE ARGS` as a fork of a process that has imported tally already.

The CLI tests run `tally` a few thousand times; each fresh interpreter spent ~0.3 s of CPU
importing tally and its dependencies before doing anything, most of the suite's time. A
zygote imports them once (it starts no thread, so forking it is safe); each run is a child
forked from it, which sets the run's working directory, points its stdin at /dev/null and
its stdout and stderr at files, runs the module as `python -m` does (`runpy`, as
`__main__`, `sys.argv` set) and exits as an interpreter does (non-daemon threads joined,
atexit handlers run, streams flushed), with the exit code `python -m` would have given. It
is still a process of its own: a crash, an `os._exit`, a hung command killed at the timeout
are the child's alone. The environment is the zygote's, `conftest.subprocess_env()`, as for
every subprocess of the suite. `TALLY_TESTS_FORK=0` runs real subprocesses instead, and
tests/test_forkserver.py checks that both give the same result.

    zygote:  python tests/forkserver.py SOCKET   (prints "ready" once listening)
    request: one JSON line {"module", "args", "cwd", "stdout", "stderr"}
    answer:  the child's pid, a line; its exit code, a line, once it has flushed; then EOF
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

# What the CLI imports, eagerly or when a command runs: imported once, in the zygote.
WARM = (
    "tally.cli.app",
    "tally.cli.server",
    "tally.bootstrap",
    "tally.store.sqlite",
    "tally.store.postgres",
    "tally.views",
    "tally.verification",
    "tally_audit",
    "asyncpg",
    "rich.console",
    "rich.table",
)
_ACCEPT_POLL_S = 1.0  # how often the zygote checks that the test process is still there


class _Exit:
    """The exit code the child reports, set just before it exits."""

    connection: socket.socket | None = None
    code = 1


def _report_exit() -> None:
    # Registered first, so run last of the atexit handlers: after the command's own
    # (threads are joined before any handler runs). Then only the streams' final flush is
    # left, done here first, so the files are whole when the test reads them.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if _Exit.connection is not None:
        with contextlib.suppress(OSError):
            _Exit.connection.sendall(f"{_Exit.code}\n".encode())


def _exit_code(exit: SystemExit) -> int:
    """What the interpreter exits with for `exit` (a message is printed, and exits 1)."""
    code = exit.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _run_child(connection: socket.socket) -> int:
    """In the forked child: the request's module, run as `python -m` would; its exit code."""
    reader = connection.makefile("rb")
    request = json.loads(reader.readline())
    connection.sendall(f"{os.getpid()}\n".encode())
    os.chdir(request["cwd"])
    stdin = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    sys.argv = [request["module"], *request["args"]]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        return _exit_code(exit)
    except BaseException:  # as the interpreter does with an uncaught exception
        traceback.print_exc()
        return 1
    return 0


def serve(path: str) -> None:
    """The zygote: import, listen, and fork a child per connection, until the process that
    started it is gone."""
    atexit.register(_report_exit)
    for module in WARM:
        importlib.import_module(module)
    if threading.active_count() != 1:
        raise RuntimeError(f"the zygote must not start threads: {threading.enumerate()}")
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(_ACCEPT_POLL_S)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while os.getppid() == parent:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            connection.setblocking(True)
            _Exit.connection = connection
            _Exit.code = _run_child(connection)
            sys.exit(_Exit.code)  # the interpreter's own exit: threads joined, atexit run
        connection.close()


class ForkServer:
    """A zygote for this test process, and runs of modules forked from it."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self._folder = folder
        self._path = str(folder / "zygote.sock")
        self._runs = 0
        self._process = subprocess.Popen(
            [sys.executable, __file__, self._path],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if line != "ready\n":
            self._process.kill()
            raise RuntimeError(f"the zygote did not start: {line!r}")

    def run(
        self, module: str, args: tuple[str, ...], *, cwd: Path, timeout: float
    ) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of `python -m module args` run in `cwd`."""
        self._runs += 1
        out = self._folder / f"{self._runs}.out"
        err = self._folder / f"{self._runs}.err"
        request = {
            "module": module,
            "args": list(args),
            "cwd": str(cwd),
            "stdout": str(out),
            "stderr": str(err),
        }
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(self._path)
            connection.sendall(json.dumps(request).encode() + b"\n")
            reader = connection.makefile("rb")
            deadline = time.monotonic() + timeout
            pid = int(reader.readline())
            try:
                answer = reader.read()  # the exit code, then EOF once the child is gone
            except TimeoutError:
                os.kill(pid, 9)
                raise subprocess.TimeoutExpired([module, *args], timeout) from None
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired([module, *args], timeout)
        # No exit code: the child died without exiting (a signal, os._exit)
        code = int(answer) if answer.strip() else -9
        stdout = out.read_text(encoding="utf-8")
        stderr = err.read_text(encoding="utf-8")
        out.unlink()
        err.unlink()
        return code, stdout, stderr

    def close(self) -> None:
        self._process.kill()
        self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


@contextlib.contextmanager
def started(env: dict[str, str]) -> Iterator[ForkServer]:
    """A zygote with `env` for the length of the block, its files removed afterwards."""
    # A short path: a UNIX socket's is limited to 107 bytes
    folder = Path(tempfile.mkdtemp(prefix="tally-zygote-"))
    server = ForkServer(folder, env)
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1])
