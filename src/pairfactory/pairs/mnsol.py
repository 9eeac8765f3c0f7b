"""MNSol v2012 neutral absolute subset (``mnsol``): 2,530 solvation free energies from mnsol.csv.

mnsol.csv's name -> SMILES mapping has known errors (../shared/data/mnsol/SOURCE.md); the curated
override table (``pairfactory/data/mnsol_overrides.yaml``) fixes them by MNSol name before
canonicalisation, and rows it cannot fix are rejected with its reason. After that every kept row
must
be one neutral closed-shell molecule on both sides: charged, radical or multi-fragment SMILES are
rejections (the dataset holds neutral solutes only; nitro groups are zwitterion-free and pass).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pairfactory import units
from pairfactory.fileio import file_sha256
from pairfactory.pairs import curation as C
from pairfactory.pairs import schema as S
from pairfactory.pairs.overrides import DEFAULT_OVERRIDES_PATH, Override, load_overrides
from pairfactory.pairs.readers import read_delimited

log = logging.getLogger(__name__)

DATASET = "mnsol"
TARGET = "dg_solv_kcal_mol"
COL_SOLUTE = "Solute"
COL_SOLVENT = "Solvent"
COL_SOLUTE_SMILES = "SoluteSMILES"
COL_SOLVENT_SMILES = "SolventSMILES"
COL_VALUE = "DeltaGsolv"
REQUIRED_COLUMNS = (COL_SOLUTE, COL_SOLVENT, COL_SOLUTE_SMILES, COL_SOLVENT_SMILES, COL_VALUE)


def read_raw(
    path: str | Path, *, overrides_path: str | Path | None = None, hint: str = ""
) -> C.RawPairs:
    path = Path(path)
    raw = read_delimited(
        path, sep=";", required_columns=REQUIRED_COLUMNS, hint=hint or "pass --mnsol-csv PATH"
    )
    overrides = load_overrides(overrides_path)
    overrides_file = Path(overrides_path) if overrides_path is not None else DEFAULT_OVERRIDES_PATH
    used: set[tuple[str, str]] = set()
    solute_input, solvent_input, overridden, preset_reason, preset_detail = [], [], [], [], []
    for solute_name, solvent_name, solute_smiles, solvent_smiles in zip(
        raw[COL_SOLUTE].str.strip(),
        raw[COL_SOLVENT].str.strip(),
        raw[COL_SOLUTE_SMILES],
        raw[COL_SOLVENT_SMILES],
    ):
        rejection: Override | None = None
        flagged = False
        smiles = {"solute": solute_smiles, "solvent": solvent_smiles}
        for kind, name in (("solute", solute_name), ("solvent", solvent_name)):
            entry = overrides.get((kind, name))
            if entry is None:
                continue
            used.add((kind, name))
            if entry.action == "reject":
                rejection = rejection or entry
            else:
                smiles[kind] = entry.smiles
                flagged = True
        solute_input.append(smiles["solute"])
        solvent_input.append(smiles["solvent"])
        overridden.append(flagged)
        preset_reason.append(rejection.reason if rejection else "")
        preset_detail.append(
            f"override table rejects {rejection.kind} {rejection.name!r}: {rejection.evidence}"
            if rejection
            else ""
        )
    frame = pd.DataFrame(
        {
            S.SOURCE_ROW: range(len(raw)),
            S.SOLUTE_RAW: raw[COL_SOLUTE_SMILES],
            S.SOLVENT_RAW: raw[COL_SOLVENT_SMILES],
            C.SOLUTE_INPUT: solute_input,
            C.SOLVENT_INPUT: solvent_input,
            S.SMILES_OVERRIDE: overridden,
            S.SOLUTE_NAME: raw[COL_SOLUTE],
            S.SOLVENT_NAME: raw[COL_SOLVENT],
            S.SOURCE_TAGS: None,
            C.PRESET_REASON: preset_reason,
            C.PRESET_DETAIL: preset_detail,
            TARGET: raw[COL_VALUE],
        }
    )
    unused = sorted(f"{kind} {name!r}" for kind, name in set(overrides) - used)
    if unused:
        # a different mnsol.csv copy may spell names differently: say which corrections did not
        # apply
        log.info(
            "%d override entries matched no row of %s: %s", len(unused), path, ", ".join(unused)
        )
    return C.RawPairs(
        dataset=DATASET,
        source=path,
        frame=frame,
        targets=[C.TargetColumn(TARGET, units.UNIT_KCAL_PER_MOL, TARGET)],
        closed_shell_only=True,
        settings={
            "overrides": str(overrides_path)
            if overrides_path is not None
            else DEFAULT_OVERRIDES_PATH.name,
            "overrides_sha256": file_sha256(overrides_file),
            "overrides_entries": len(overrides),
            "overrides_matched": len(used),
        },
    )


def curate_mnsol(path: str | Path, *, overrides_path: str | Path | None = None) -> C.CuratedDataset:
    """Curate mnsol.csv with the override table applied and closed-shell checks on every kept
    row."""
    curated = C.build_curated(read_raw(path, overrides_path=overrides_path))
    _assert_closed_shell(curated)
    return curated


def _assert_closed_shell(curated: C.CuratedDataset) -> None:
    """Belt and braces: re-check every kept SMILES (the contract other stages rely on)."""
    from pairfactory.pairs.smiles import canonicalize

    for target, table in curated.tables.items():
        for column in (S.SOLUTE_SMILES, S.SOLVENT_SMILES):
            for smiles in table[column].unique():
                problem = canonicalize(smiles).closed_shell_problem()
                if problem:
                    raise C.ReconciliationError(
                        f"{DATASET}/{target}: kept {column} {smiles}: {problem[1]}"
                    )
