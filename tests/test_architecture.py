"""The package's layers import one way: cli -> daemon/gateway -> host -> rules -> config.

Read from the source with `ast` (imports inside functions included), so a shortcut
across layers fails here rather than surviving until someone wonders why a pure rule
needs a database.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ds01d"
#: The layer of each subpackage; a module may import its own layer and any lower one.
LAYERS = {"config": 0, "rules": 1, "host": 2, "daemon": 3, "gateway": 3, "cli": 4}
#: Subpackages that sit beside the layers: what else they may import of ds01d.
BESIDE = {"testing": set()}
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def subpackage(module: str) -> str | None:
    """`ds01d.rules.owners` -> `rules`; `ds01d` itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def ds01d_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ds01d module `path` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "ds01d"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "ds01d":
                out.append((node.lineno, base))
    return out


def test_every_subpackage_is_placed() -> None:
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert found <= set(LAYERS) | set(BESIDE), f"place {found - set(LAYERS) - set(BESIDE)} in LAYERS"
    assert not [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"], \
        "modules belong in a subpackage, not at the top of ds01d/"


def test_every_subpackage_says_what_lives_there() -> None:
    for name in LAYERS.keys() | BESIDE.keys():
        init = PACKAGE / name / "__init__.py"
        if init.exists():
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
            assert doc and "import" in doc, f"{init} needs a docstring saying what lives there and what it may import"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    mine = subpackage(module_name(path))
    wrong = []
    for line, target in ds01d_imports(path):
        theirs = subpackage(target)
        if mine is None or theirs is None or theirs == mine:
            continue
        if mine in BESIDE:
            ok = theirs in BESIDE[mine]
        elif theirs in BESIDE:
            ok = False  # test doubles are loaded by name where needed, never imported
        else:
            ok = LAYERS[theirs] < LAYERS[mine]  # daemon and gateway, side by side, talk over the socket
        if not ok:
            wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {mine} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_two_modules_differ_by_a_plural() -> None:
    stems = {p.with_suffix("").relative_to(PACKAGE).as_posix() for p in MODULES}
    clashes = sorted(s for s in stems if s + "s" in stems)
    assert not clashes, f"{clashes}: name modules for their role"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_imports(path: Path) -> None:
    """Under every supported interpreter (scripts/test-pythons), not only the modules a test reaches."""
    importlib.import_module(module_name(path))
