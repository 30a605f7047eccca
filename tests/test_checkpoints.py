"""Signed checkpoints (docs/log-format.md, "Signed checkpoints"): the published test vector,
the auditor's checks of a checkpoint file and of a log against it, and the CLI around them.
What they catch in a tampered database, on both stores, is in tests/test_tamper.py."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from conftest import SUBPROCESS_TIMEOUT_S, TallyRunner, subprocess_env
from tally.audit.canonical import dumps
from tally.audit.checkpoint import sign, statement
from tally_audit import verify_events
from tally_audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    Unreadable,
    check_checkpoint,
    load_public_key,
    read_checkpoint,
)
from test_canonical import DOC, doc_chain, vector_rows

_BLOCK = re.compile(
    r"^```(?:json|text) (checkpoint|signing-key|public-key)=(\S+)\n(.*?)\n```$", re.M | re.S
)


def doc_block(kind: str, name: str) -> str:
    found: dict[tuple[str, str], str] = {
        (k, n): body for k, n, body in _BLOCK.findall(DOC.read_text(encoding="utf-8"))
    }
    return found[(kind, name)]


def the_test_key() -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(doc_block("signing-key", "test").encode(), None)
    assert isinstance(key, Ed25519PrivateKey)
    assert key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    ) == bytes(range(32))
    return key


def vector_claim(key: Ed25519PrivateKey) -> dict[str, Any]:
    return statement(
        key,
        ledger="demo",
        seq=5,
        hash_hex=doc_chain()["5-refund-request"][1],
        signed_at_us=1_735_689_840_000_000,
    )


def write(path: Path, document: object) -> str:
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return str(path)


@pytest.fixture
def public_key(tmp_path: Path) -> bytes:
    path = tmp_path / "test.pub"
    path.write_text(doc_block("public-key", "test") + "\n", encoding="utf-8")
    return load_public_key(str(path))


# -- the published vector --------------------------------------------------------------


def test_the_document_vector_is_what_tally_signs() -> None:
    key = the_test_key()
    claim = vector_claim(key)
    assert dumps(claim).decode() == doc_block("checkpoint", "statement")
    assert sign(key, claim) == {
        "checkpoint": claim,
        "signature": doc_block("checkpoint", "signature"),
    }


def test_the_auditor_verifies_the_document_vector(tmp_path: Path, public_key: bytes) -> None:
    document = {
        "checkpoint": json.loads(doc_block("checkpoint", "statement")),
        "signature": doc_block("checkpoint", "signature"),
    }
    checkpoint = read_checkpoint(write(tmp_path / "cp.json", document), public_key)
    rows = vector_rows()
    assert (checkpoint.ledger, checkpoint.seq, checkpoint.hash) == ("demo", 5, rows[4][2])
    report = verify_events("demo", rows, (len(rows), rows[-1][2]), marks=(5,))
    check_checkpoint(report, checkpoint)
    assert report.ok


# -- a checkpoint file that does not verify --------------------------------------------


def _signed(**changes: Any) -> dict[str, Any]:
    key = the_test_key()
    document = sign(key, vector_claim(key))
    document["checkpoint"].update(changes)  # after signing: the signature no longer fits
    return document


@pytest.mark.parametrize(
    ("document", "said"),
    [
        (_signed(seq=4), "the signature does not verify"),
        (_signed(signed_at_us=0), "the signature does not verify"),
        (_signed(public_key="00" * 32), "signed by another key"),
        (_signed(v=2), "not a version 1 tally checkpoint"),
        (_signed(seq=0), "malformed"),
        (_signed(seq=5.0), "malformed"),
        (_signed(hash="E5" * 32), "malformed"),
        (_signed(extra="x"), "keys are not the format's"),
        ({**_signed(), "note": "x"}, "not a checkpoint"),
        ({**_signed(), "signature": "00" * 64}, "the signature does not verify"),
        ({**_signed(), "signature": "zz"}, "malformed"),
        ([], "not a checkpoint"),
    ],
    ids=[
        "seq-changed",
        "time-changed",
        "another-key-named",
        "version-2",
        "seq-0",
        "seq-float",
        "hash-upper-case",
        "extra-key",
        "extra-top-level-key",
        "zero-signature",
        "signature-not-hex",
        "not-an-object",
    ],
)
def test_a_checkpoint_that_does_not_verify_is_refused(
    tmp_path: Path, public_key: bytes, document: object, said: str
) -> None:
    with pytest.raises(CheckpointError, match=said):
        read_checkpoint(write(tmp_path / "cp.json", document), public_key)


def test_a_checkpoint_signed_by_another_key_is_refused(tmp_path: Path, public_key: bytes) -> None:
    other = Ed25519PrivateKey.generate()
    document = sign(
        other, statement(other, ledger="demo", seq=5, hash_hex="0" * 64, signed_at_us=1)
    )
    with pytest.raises(CheckpointError, match="signed by another key"):
        read_checkpoint(write(tmp_path / "cp.json", document), public_key)


def test_public_keys_are_read_as_pem_or_hex_and_nothing_else(tmp_path: Path) -> None:
    key = the_test_key()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    (tmp_path / "hex").write_text(raw.hex() + "\n")
    assert load_public_key(str(tmp_path / "hex")) == raw
    x25519 = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "x25519.pem").write_bytes(x25519)
    with pytest.raises(CheckpointError, match="not an Ed25519 key"):
        load_public_key(str(tmp_path / "x25519.pem"))
    (tmp_path / "junk").write_text("not a key")
    with pytest.raises(CheckpointError, match="no PEM public key"):
        load_public_key(str(tmp_path / "junk"))
    with pytest.raises(Unreadable):
        load_public_key(str(tmp_path / "missing"))
    with pytest.raises(Unreadable):
        read_checkpoint(str(tmp_path / "missing.json"), raw)


# -- a log against a checkpoint --------------------------------------------------------


def _checkpoint(seq: int, hash_: bytes) -> Checkpoint:
    return Checkpoint("cp.json", "demo", seq, hash_, 1)


def test_a_log_shorter_than_its_checkpoint_lost_events() -> None:
    rows = vector_rows()
    report = verify_events("demo", rows[:3], (3, rows[2][2]), marks=(5,))
    assert report.ok  # the chain alone: a valid log of 3 events
    check_checkpoint(report, _checkpoint(5, rows[4][2]))
    assert report.finding is not None
    assert report.finding.seq == 5
    assert "the log ends at seq 3" in report.finding.problem


def test_a_log_whose_hash_at_the_checkpoint_differs_was_rewritten() -> None:
    rows = vector_rows()
    report = verify_events("demo", rows, (len(rows), rows[-1][2]), marks=(3,))
    assert report.chain_at == {3: rows[2][2]}
    check_checkpoint(report, _checkpoint(3, rows[3][2]))  # another hash than seq 3's
    assert report.finding is not None
    assert "the chain differs from a signed checkpoint" in report.finding.problem


def test_a_finding_earlier_in_the_log_is_kept() -> None:
    rows = list(vector_rows())
    rows[1] = (2, rows[1][1] + b" ", rows[1][2])
    report = verify_events("demo", rows, (len(rows), rows[-1][2]), marks=(5,))
    assert report.finding is not None
    first = report.finding
    check_checkpoint(report, _checkpoint(5, rows[4][2]))
    assert report.finding == first


# -- the CLI ---------------------------------------------------------------------------


@pytest.fixture
def signed_ledger(tmp_path: Path, tally: TallyRunner) -> tuple[Path, Path, Path]:
    """A demo ledger in a SQLite file, a signing key, and a checkpoint of its head."""
    db, key, checkpoint = tmp_path / "l.db", tmp_path / "k.pem", tmp_path / "cp.json"
    assert tally("demo", "--db", str(db)).returncode == 0
    created = tally("signing-key", "create", str(key))
    assert created.returncode == 0, created.describe()
    assert key.stat().st_mode & 0o777 == 0o600
    signed = tally(
        "checkpoint", "--signing-key", str(key), "--db", str(db), "--out", str(checkpoint),
        "--json",
    )  # fmt: skip
    assert signed.returncode == 0, signed.describe()
    assert signed.json()["seq"] == 3
    return db, key, checkpoint


def test_the_cli_signs_and_the_auditor_checks(
    signed_ledger: tuple[Path, Path, Path], tally: TallyRunner, tally_audit: TallyRunner
) -> None:
    db, key, checkpoint = signed_ledger
    trusted = ("--public-key", f"{key}.pub", "--checkpoint", str(checkpoint))
    audited = tally_audit(str(db), *trusted)
    assert audited.returncode == 0, audited.describe()
    assert "ok default: 3 events" in audited.stdout
    assert "1 signed checkpoint(s) hold" in audited.stdout
    # Later events leave an older checkpoint holding
    tally("recharge", "bob", "1.00", "--currency", "USD", "--gateway", "pp", "--db", str(db))
    assert tally_audit(str(db), *trusted).returncode == 0
    # The whole ledger gone: the checkpoint names a log the file no longer has
    with sqlite3.connect(db) as raw:
        for (trigger,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            raw.execute(f"DROP TRIGGER {trigger}")
        for table in ("events", "ledgers"):
            column = "name" if table == "ledgers" else "ledger"
            raw.execute(f"DELETE FROM {table} WHERE {column} = 'default'")
    gone = tally_audit(str(db), *trusted)
    assert gone.returncode == 1, gone.describe()
    assert "holds no log of it" in gone.stdout


def test_the_auditor_refuses_a_forged_checkpoint_and_bad_usage(
    signed_ledger: tuple[Path, Path, Path], tally_audit: TallyRunner, tmp_path: Path
) -> None:
    db, key, checkpoint = signed_ledger
    document = json.loads(checkpoint.read_text())
    document["checkpoint"]["seq"] = 2
    forged = write(tmp_path / "forged.json", document)
    refused = tally_audit(str(db), "--public-key", f"{key}.pub", "--checkpoint", forged)
    assert refused.returncode == 1, refused.describe()
    assert refused.stdout.startswith("FAIL checkpoint")
    no_key = tally_audit(str(db), "--checkpoint", str(checkpoint))
    assert no_key.returncode == 2
    assert "--checkpoint needs --public-key" in no_key.stderr
    other = tally_audit(
        str(db), "--public-key", f"{key}.pub", "--checkpoint", str(checkpoint), "--ledger", "x"
    )
    assert other.returncode == 2
    assert "not --ledger" in other.stderr
    missing = tally_audit(str(db), "--public-key", f"{key}.pub", "--checkpoint", "nope.json")
    assert missing.returncode == 2


def test_the_cli_signs_nothing_it_cannot_verify(
    signed_ledger: tuple[Path, Path, Path], tally: TallyRunner, tmp_path: Path
) -> None:
    db, key, checkpoint = signed_ledger
    out = tmp_path / "again.json"
    args = ("checkpoint", "--signing-key", str(key), "--db", str(db))
    exists = tally(*args, "--out", str(checkpoint))
    assert exists.returncode == 2
    assert "never replaced" in exists.stderr
    assert tally(*args, "--ledger", "nosuch", "--out", str(out)).returncode == 1
    assert not out.exists()
    assert tally("signing-key", "create", str(key)).returncode == 2  # never replaced
    not_a_key = tally("checkpoint", "--signing-key", f"{key}.pub", "--db", str(db))
    assert not_a_key.returncode == 2
    assert "no unencrypted PEM private key" in not_a_key.stderr
    with sqlite3.connect(db) as raw:  # an event's amount edited behind tally's back
        raw.execute("DROP TRIGGER events_refuse_update")
        raw.execute("UPDATE events SET body = replace(body, '20000', '90000') WHERE seq = 1")
    broken = tally(*args, "--out", str(out))
    assert broken.returncode == 1, broken.describe()
    assert "not signed" in broken.stderr
    assert not out.exists()
    as_json = tally(*args, "--out", str(out), "--json")
    assert (as_json.returncode, as_json.json()["error"]) == (1, "not_verified")


def test_the_signing_key_may_come_from_the_environment(
    signed_ledger: tuple[Path, Path, Path],
) -> None:
    db, key, _ = signed_ledger
    done = subprocess.run(
        [sys.executable, "-m", "tally.cli", "checkpoint", "--db", str(db)],  # to stdout
        capture_output=True,
        text=True,
        env={**subprocess_env(), "TALLY_SIGNING_KEY": str(key)},
        check=False,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["checkpoint"]["seq"] == 3


def test_a_statement_holding_text_that_is_not_unicode_is_refused_not_a_crash(
    tmp_path: Path, public_key: bytes
) -> None:
    document = _signed()
    text = json.dumps(document).replace('"demo"', '"de\\udcffmo"')
    (tmp_path / "cp.json").write_text(text, encoding="utf-8")
    with pytest.raises(CheckpointError, match="not Unicode"):
        read_checkpoint(str(tmp_path / "cp.json"), public_key)


def test_nothing_is_signed_for_a_ledger_without_events_or_a_database_not_there(
    tally: TallyRunner, tmp_path: Path
) -> None:
    key, out = tmp_path / "k.pem", tmp_path / "cp.json"
    assert tally("signing-key", "create", str(key)).returncode == 0
    db = tmp_path / "l.db"
    assert tally("ledger", "create", "empty", "--db", str(db)).returncode == 0
    args = ("checkpoint", "--signing-key", str(key), "--out", str(out), "--json")
    empty = tally(*args, "--db", str(db), "--ledger", "empty")
    assert empty.returncode == 1, empty.describe()
    assert (empty.json()["error"], empty.json()["field"]) == ("nothing_to_sign", "ledger")
    typo = tmp_path / "typo.db"
    missing = tally(*args, "--db", str(typo))
    assert (missing.returncode, missing.json()["error"]) == (1, "ledger_unknown")
    assert not typo.exists()
    assert not out.exists()
