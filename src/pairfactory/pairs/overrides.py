"""The curated MNSol override table (``pairfactory/data/mnsol_overrides.yaml``): load and validate.

Keyed by MNSol name and kind (solute|solvent); each entry replaces the file's SMILES, accepts it as
a
documented approximation, or rejects the rows, and carries its evidence. See the YAML header.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from pairfactory.errors import InputFileError
from pairfactory.pairs import schema

DEFAULT_OVERRIDES_PATH = Path(__file__).resolve().parents[1] / "data" / "mnsol_overrides.yaml"

KINDS = ("solute", "solvent")
ACTIONS = ("replace", "accept", "reject")
FORMULA_CHECKS = ("match", "exception")


@dataclass(frozen=True)
class Override:
    kind: str  # solute | solvent
    name: str  # the MNSol name (the key)
    action: str  # replace | accept | reject
    evidence: str
    smiles: str | None = None  # the SMILES to use (replace/accept), None for reject
    reason: str | None = None  # reject reason code (reject only)
    file_smiles: str | None = None  # what the raw file holds for this name (documentation, tested)
    mnsol_formula: str | None = None  # MNSol's Formula for solutes
    formula_check: str | None = None  # match | exception (solutes with a SMILES)


def load_overrides(path: str | Path | None = None) -> dict[tuple[str, str], Override]:
    """Read and validate the override table; key (kind, name). Problems raise InputFileError."""
    path = Path(path) if path is not None else DEFAULT_OVERRIDES_PATH
    if not path.is_file():
        raise InputFileError(path, "override table not found (pass an existing YAML file)")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputFileError(path, f"is not valid YAML: {err}") from err
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list):
        raise InputFileError(path, "expected a mapping with an 'entries' list")
    overrides: dict[tuple[str, str], Override] = {}
    allowed = {f for f in Override.__dataclass_fields__}
    for number, entry in enumerate(document["entries"], start=1):
        where = f"entry {number}"
        if not isinstance(entry, dict):
            raise InputFileError(path, f"{where} is not a mapping")
        unknown = set(entry) - allowed
        if unknown:
            raise InputFileError(
                path, f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        for key in ("kind", "name", "action", "evidence"):
            if not str(entry.get(key) or "").strip():
                raise InputFileError(
                    path,
                    f"{where} lacks '{key}' (every override needs kind, name, action, evidence)",
                )
        override = Override(**{k: (str(v) if v is not None else None) for k, v in entry.items()})
        where = f"entry {number} ({override.kind} {override.name!r})"
        if override.kind not in KINDS:
            raise InputFileError(path, f"{where}: kind must be one of {KINDS}")
        if override.action not in ACTIONS:
            raise InputFileError(path, f"{where}: action must be one of {ACTIONS}")
        if override.action == "reject":
            if override.reason not in schema.REASONS:
                raise InputFileError(
                    path, f"{where}: reject needs a reason from {sorted(schema.REASONS)}"
                )
        elif not override.smiles:
            raise InputFileError(path, f"{where}: action {override.action} needs a smiles")
        if override.formula_check is not None and override.formula_check not in FORMULA_CHECKS:
            raise InputFileError(path, f"{where}: formula_check must be one of {FORMULA_CHECKS}")
        key = (override.kind, override.name)
        if key in overrides:
            raise InputFileError(path, f"{where}: duplicate entry for this name")
        overrides[key] = override
    return overrides
