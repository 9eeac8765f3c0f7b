"""FreeSolv v0.52 (``freesolv``): the 642 experimental hydration free energies, solvent water."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pairfactory import units
from pairfactory.pairs import curation as C
from pairfactory.pairs import schema as S
from pairfactory.pairs.readers import read_freesolv

DATASET = "freesolv"
TARGET = "dg_hydration_kcal_mol"
WATER_SMILES = "O"
WATER_NAME = "water"


def read_raw(path: str | Path, *, hint: str = "") -> C.RawPairs:
    path = Path(path)
    raw = read_freesolv(path, hint=hint or "pass --freesolv-txt PATH")
    frame = pd.DataFrame(
        {
            S.SOURCE_ROW: range(len(raw)),
            S.SOLUTE_RAW: raw["smiles"],
            S.SOLVENT_RAW: None,  # FreeSolv has no solvent column: water is implied
            C.SOLUTE_INPUT: raw["smiles"],
            C.SOLVENT_INPUT: WATER_SMILES,
            S.SMILES_OVERRIDE: False,
            S.SOLUTE_NAME: raw["iupac_name"],
            S.SOLVENT_NAME: WATER_NAME,
            S.SOURCE_TAGS: raw["compound_id"],  # mobley_XXXXXXX, FreeSolv's own key
            C.PRESET_REASON: "",
            C.PRESET_DETAIL: "",
            TARGET: raw["expt_kcal_mol"],
        }
    )
    return C.RawPairs(
        dataset=DATASET,
        source=path,
        frame=frame,
        targets=[C.TargetColumn(TARGET, units.UNIT_KCAL_PER_MOL, TARGET)],
    )


def curate_freesolv(path: str | Path) -> C.CuratedDataset:
    """Curate FreeSolv ``database.txt`` (642 rows, water)."""
    return C.build_curated(read_raw(path))
