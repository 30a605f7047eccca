"""docs/http-api.md is executable: its curl session and SDK snippet run against a live
server, and its table of error codes is the server's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tally.domain.rejections import Rejection
from tally.http.problems import EdgeProblem, status_of

pytest_plugins = ["http_fixtures"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the session is written for curl")
def test_the_curl_session_runs(live: Any) -> None:
    session = next(block for block in blocks("sh") if "curl" in block)
    env = {**os.environ, "TALLY_URL": live.url, "KEY": live.keys["admin"]}
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", session],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "idempotent-replayed: true" in done.stdout.lower()
    assert '{"user_id":"alice","balances":[{"currency":"USD","balance":"135.00"}]}' in done.stdout
    assert '"refundable":"30.00"' in done.stdout
    # the holds: one captured (40.00 paid, 20.00 back, 15.00 of its order refunded), one
    # released
    assert '"status":"captured","expires_at":"2099-01-01T00:00:00.000000Z","captured":"40.00"' in (
        done.stdout
    )
    assert '"released":"20.00"' in done.stdout
    assert '{"user_id":"alice","balances":[{"currency":"USD","balance":"110.00"}]}' in done.stdout


def test_the_sdk_snippet_runs(live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (snippet,) = blocks("python")
    monkeypatch.setenv("TALLY_URL", live.url)
    monkeypatch.setenv("KEY", live.keys["admin"])
    exec(compile(snippet, str(DOC), "exec"), {})  # asserts the balance itself
    with live.client() as http:
        balances = http.get("/v1/users/bob/balances").json()["balances"]
    assert balances == [{"currency": "USD", "balance": "135.00"}]


def test_the_documented_statuses_are_the_servers() -> None:
    rows = re.findall(r"^\| (\d{3}) \| (.+) \|$", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    documented = {
        code: int(status) for status, codes in rows for code in re.findall(r"`([a-z_]+)`", codes)
    }
    by_code: dict[str, Rejection | EdgeProblem] = {r.code: r for r in Rejection}
    by_code.update({p.code: p for p in EdgeProblem})
    documented.pop("balance_after")  # named as an example, not a code
    assert set(documented) == set(by_code)
    assert {code: status_of(reason) for code, reason in by_code.items()} == documented
