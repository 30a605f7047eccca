"""Dependencies point inward: the domain is stdlib-only, the auditor is independent of tally."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
DOMAIN = sorted((SRC / "tally" / "domain").glob("*.py"))
AUDITOR = sorted((SRC / "tally_audit").rglob("*.py"))


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports, absolute; relative imports resolved against its package."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    return modules_imported_by(path.read_text(encoding="utf-8"), package)


def modules_imported_by(source: str, package: str) -> list[str]:
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append(module)
            # `from tally.domain import accounts` imports tally.domain.accounts
            found.extend(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def top_level(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def test_the_walk_finds_the_code() -> None:
    names = {path.name for path in DOMAIN}
    assert {"decide.py", "state.py", "events.py", "rejections.py"} <= names
    assert {"__init__.py", "verify.py"} <= {path.name for path in AUDITOR}


def test_import_resolution() -> None:
    assert top_level("os.path") == "os"
    source = "import iso4217\nfrom ..money import parse_amount\nfrom . import limits\n"
    assert modules_imported_by(source, "tally.domain") == [
        "iso4217",
        "tally.money",
        "tally.money.parse_amount",
        "tally.domain",
        "tally.domain.limits",
    ]
    nested = "def f() -> None:\n    import tally.audit.canonical\n"
    assert modules_imported_by(nested, "tally.domain") == ["tally.audit.canonical"]
    sample = SRC / "tally" / "domain" / "decide.py"
    modules = imported_modules(sample)
    assert "tally.domain.accounts" in modules
    assert "re" in modules


@pytest.mark.parametrize("path", DOMAIN, ids=[path.name for path in DOMAIN])
def test_domain_imports_only_stdlib_and_itself(path: Path) -> None:
    outside = []
    for module in imported_modules(path):
        if top_level(module) in sys.stdlib_module_names or module == "__future__":
            continue
        if module == "tally.domain" or module.startswith("tally.domain."):
            continue
        outside.append(module)
    assert outside == []


@pytest.mark.parametrize("path", AUDITOR, ids=[path.name for path in AUDITOR])
def test_auditor_imports_nothing_from_tally(path: Path) -> None:
    from_tally = [m for m in imported_modules(path) if top_level(m) == "tally"]
    assert from_tally == []
    # Standard library only, too; Ed25519 for signed checkpoints has to come from somewhere
    allowed = {"tally_audit", *(("cryptography",) if path.name == "checkpoint.py" else ())}
    outside = [
        m
        for m in imported_modules(path)
        if top_level(m) not in sys.stdlib_module_names and top_level(m) not in allowed
    ]
    assert outside == []
