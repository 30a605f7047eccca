"""A small migration runner: numbered SQL files per engine, each applied once, in order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(engine: str) -> list[Migration]:
    """The migrations shipped for `engine` ("sqlite"), in version order."""
    folder = resources.files("tally.store").joinpath("migrations", engine)
    found = []
    for item in folder.iterdir():
        match = _NAME.fullmatch(item.name)
        if match:
            found.append(
                Migration(version=int(match[1]), name=match[2], sql=item.read_text("utf-8"))
            )
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{engine} migrations are not numbered 1..n: {found}")
    return found
