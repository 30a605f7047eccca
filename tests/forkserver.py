"""`python -m MODULE ARGS` as a fork of a process that has imported tally already.

The CLI tests run `tally` a few thousand times; each fresh interpreter spent ~0.3 s of CPU
importing tally and its dependencies before doing anything, most of the suite's time. A
zygote imports them once (it starts no thread, so forking it is safe). For each run it forks
a child that forks the run and waits for it. The run sets its working directory,
`sys.path[0]` and environment (the request's: `conftest.subprocess_env()`, as for every
subprocess of the suite), points its stdin at /dev/null and its stdout and stderr at files,
runs the module as `python -m` does (`runpy`, as `__main__`, `sys.argv` set) and exits as an
interpreter does (non-daemon threads joined, atexit handlers run, streams flushed; SIGINT
after an uncaught KeyboardInterrupt). It is still a process of its own: a crash, an
`os._exit`, a hung command killed at the timeout are the run's alone, and its exit code is
the one its waiter's `waitpid` saw, as `subprocess` reports it. What differs from a fresh
interpreter: modules are imported once, before the run's environment is set, and every run
has the zygote's hash seed. `TALLY_TESTS_FORK=0` runs real subprocesses instead, and
tests/test_forkserver.py checks that both give the same result.

    zygote:  python tests/forkserver.py SOCKET   (prints "ready" once listening)
    request: one JSON line {"module", "args", "cwd", "env", "stdout", "stderr"}
    answer:  the run's pid, a line; its exit code, a line, once it has exited; then EOF
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import itertools
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
from typing import Any

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
    """Set when the run ends with an uncaught KeyboardInterrupt: the interpreter then kills
    itself with SIGINT once its atexit handlers have run."""

    sigint = False


def _exit_by_sigint() -> None:
    # Registered first, so run last of the atexit handlers, after the command's own.
    if _Exit.sigint:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)


def _exit_code(exit: SystemExit) -> int:
    """What the interpreter exits with for `exit` (a message is printed, and exits 1)."""
    code = exit.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _run(request: dict[str, Any]) -> int:
    """In the run's process: the request's module, run as `python -m` would; its exit code."""
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()  # `python -m`'s first entry (the zygote's is tests/)
    os.environ.clear()
    os.environ.update(request["env"])
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
    except BaseException as error:  # as the interpreter does with an uncaught exception
        traceback.print_exc()
        _Exit.sigint = isinstance(error, KeyboardInterrupt)
        return 1
    return 0


def _fork_run(connection: socket.socket) -> dict[str, Any]:
    """In the zygote's child: read the request, fork the run, send its pid, wait for it and
    send its exit code as `subprocess` gives it (negative: the signal that ended it), then
    leave with nothing of the zygote's exit run. Returns only in the run's process: the
    request, the connection closed (its EOF, once the child is gone, ends the answer)."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        connection.setblocking(True)
        with connection.makefile("rb") as reader:
            request: dict[str, Any] = json.loads(reader.readline())
        pid = os.fork()
        if pid == 0:
            connection.close()
            return request
        connection.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        # A client that timed out killed the run and hung up: nobody to tell.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    except BaseException:
        traceback.print_exc()
    os._exit(0)


def serve(path: str) -> None:
    """The zygote: import, listen, and fork a child per connection, until the process that
    started it is gone. The child forks the run and waits for it, so that a run killed by a
    signal or ended by `os._exit` reports its exit code as a fresh process's would."""
    atexit.register(_exit_by_sigint)
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
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children are reaped by the kernel
    while os.getppid() == parent:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        if os.fork() == 0:
            listener.close()
            request = _fork_run(connection)
            sys.exit(_run(request))  # the interpreter's own exit: threads joined, atexit run
        connection.close()


class ForkServer:
    """A zygote for this test process, and runs of modules forked from it."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self._folder = folder
        self._path = str(folder / "zygote.sock")
        self._runs = itertools.count(1)  # next() is atomic: tests may run from threads
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
            self._process.wait()
            self._process.stdout.close()
            raise RuntimeError(f"the zygote did not start: {line!r}")

    def run(
        self,
        module: str,
        args: tuple[str, ...],
        *,
        cwd: Path,
        env: dict[str, str],
        timeout: float,
    ) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of `python -m module args` run in `cwd` with `env`,
        within `timeout` seconds (else it is killed and `subprocess.TimeoutExpired` raised)."""
        run = next(self._runs)
        out = self._folder / f"{run}.out"
        err = self._folder / f"{run}.err"
        request = {
            "module": module,
            "args": list(args),
            "cwd": str(cwd),
            "env": env,
            "stdout": str(out),
            "stderr": str(err),
        }
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(self._path)
            connection.sendall(json.dumps(request).encode() + b"\n")
            with connection.makefile("rb") as reader:
                pid = int(reader.readline())
                try:
                    connection.settimeout(max(deadline - time.monotonic(), 0.001))
                    answer = reader.read()  # the exit code, then EOF
                except TimeoutError:
                    # Gone already if it ended as the deadline passed: a timeout all the same.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired([module, *args], timeout) from None
        code = int(answer)
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


_SOCKET_PATH_MAX = 100  # a UNIX socket's path is limited to 107 bytes


@contextlib.contextmanager
def started(env: dict[str, str], folder: Path | None = None) -> Iterator[ForkServer]:
    """A zygote with `env` for the length of the block, its socket and the runs' output in
    `folder` (pytest's, which pytest prunes even after a killed session; a new temporary
    folder if none is given, or if the socket's path there would be too long), which it
    empties afterwards."""
    if folder is None or len(os.fsencode(folder / "zygote.sock")) > _SOCKET_PATH_MAX:
        folder = Path(tempfile.mkdtemp(prefix="tally-zygote-"))
    try:
        server = ForkServer(folder, env)
        try:
            yield server
        finally:
            server.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1])
