"""The package's one-way imports (docs/architecture.md): qm never imports ml, ml never imports qm
except the shard reader, the shared modules import nothing of ours but each other, and the
pairs stage imports neither half."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pairfactory"
SHARED = {"config", "fileio", "errors", "units"}
# ml reads shards through the shard reader only (DESIGN.md: "ml reads shards through the shard
# reader only").
ML_MAY_IMPORT_FROM_QM = {"pairfactory.qm.shards"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every pairfactory module the file imports, lazy imports inside functions included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pairfactory"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("pairfactory"):
                found.add(node.module)
                # `from pairfactory.qm import shards` names the submodule in the alias
                found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    return parts[1]


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        layer = _layer(module)
        for imported in sorted(_imports(path)):
            target = _layer(imported)
            if imported == "pairfactory" or target in ("root",):
                continue
            if layer == "qm" and target == "ml":
                problems.append(f"{module} imports {imported} (qm must not import ml)")
            if layer == "ml" and target == "qm":
                if not any(
                    imported == ok or imported.startswith(ok + ".") for ok in ML_MAY_IMPORT_FROM_QM
                ):
                    problems.append(
                        f"{module} imports {imported} (ml may import only the shard reader of qm)"
                    )
            if layer == "pairs" and target in ("qm", "ml", "cli"):
                problems.append(f"{module} imports {imported} (pairs imports only shared modules)")
            if layer in SHARED and target not in SHARED:
                problems.append(
                    f"{module} imports {imported} (a shared module imports only shared modules)"
                )
            if layer != "cli" and target == "cli":
                problems.append(f"{module} imports {imported} (only the command line imports cli)")
    return problems


def test_imports_go_one_way() -> None:
    problems = _violations()
    assert not problems, "\n".join(problems)


def test_every_module_belongs_to_a_known_layer() -> None:
    layers = {_layer(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert layers <= {"root", "cli", "pairs", "qm", "ml", *SHARED}, layers


@pytest.mark.parametrize(
    ("module", "imported", "allowed"),
    [
        ("pairfactory.qm.plan", "pairfactory.ml.models", False),
        ("pairfactory.ml.datasets", "pairfactory.qm.shards", True),
        ("pairfactory.ml.datasets", "pairfactory.qm.engines.xtb", False),
        ("pairfactory.pairs.curation", "pairfactory.qm.plan", False),
    ],
)
def test_the_rule_itself_can_fail(tmp_path: Path, monkeypatch, module, imported, allowed) -> None:
    # The checker flags a forbidden import in a synthetic package laid out like ours.
    root = tmp_path / "pairfactory"
    path = root.joinpath(*module.split(".")[1:]).with_suffix(".py")
    path.parent.mkdir(parents=True)
    path.write_text(f"import {imported}\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", root)
    assert (not _violations()) == allowed
