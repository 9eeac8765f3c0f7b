"""CombiSolv-Exp-8780 (``combisolv``) and its FreeSolv-tagged water subset (``freesolv_cgib``).

``Source_all`` is kept verbatim as ``source_tags``. ``freesolv_cgib`` is CGIB's FreeSolv: the rows
whose ``Source_all`` mentions FreeSolv (560, all in water), with CombiSolv's source-averaged values.
Its reconciliation counts the rows of that subset; the other CombiSolv rows are not its input.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pairfactory import units
from pairfactory.errors import InputFileError
from pairfactory.pairs import curation as C
from pairfactory.pairs import schema as S
from pairfactory.pairs.readers import read_delimited

COL_SOLVENT = "smiles_solvent"
COL_SOLUTE = "smiles_solute"
COL_VALUE = "dGsolv_avg"
# CISE-AMGNN's copy names the column without its unit; the original layout carries it
VALUE_COLUMN_ALIASES = ("dGsolv_avg", "dGsolv_avg [kcal/mol]")
COL_SOURCES = "Source_all"
FREESOLV_TAG = "FreeSolv"
TARGET_COMBISOLV = "dg_solv_kcal_mol"
TARGET_FREESOLV_CGIB = "dg_hydration_kcal_mol"


def _read_table(path: Path, hint: str) -> pd.DataFrame:
    # accept either spelling of the value column; require one of them
    for alias in VALUE_COLUMN_ALIASES:
        try:
            raw = read_delimited(
                path,
                sep=",",
                required_columns=[COL_SOLVENT, COL_SOLUTE, alias, COL_SOURCES],
                hint=hint,
            )
        except InputFileError as err:
            if (
                alias != VALUE_COLUMN_ALIASES[-1]
                and "missing required column" in err.problem
                and alias in err.problem
            ):
                continue
            raise
        return raw.rename(columns={alias: COL_VALUE})
    raise AssertionError("unreachable")


def read_raw(path: str | Path, *, freesolv_only: bool = False, hint: str = "") -> C.RawPairs:
    path = Path(path)
    raw = _read_table(path, hint or "pass --combisolv-csv PATH")
    if freesolv_only:
        raw = raw[raw[COL_SOURCES].str.contains(FREESOLV_TAG, regex=False)]
    dataset = "freesolv_cgib" if freesolv_only else "combisolv"
    target = TARGET_FREESOLV_CGIB if freesolv_only else TARGET_COMBISOLV
    frame = pd.DataFrame(
        {
            # the row index of the full CombiSolv file, also for the subset: traceable to the raw
            # file
            S.SOURCE_ROW: raw.index.to_numpy(),
            S.SOLUTE_RAW: raw[COL_SOLUTE].to_numpy(),
            S.SOLVENT_RAW: raw[COL_SOLVENT].to_numpy(),
            C.SOLUTE_INPUT: raw[COL_SOLUTE].to_numpy(),
            C.SOLVENT_INPUT: raw[COL_SOLVENT].to_numpy(),
            S.SMILES_OVERRIDE: False,
            S.SOLUTE_NAME: None,
            S.SOLVENT_NAME: None,
            S.SOURCE_TAGS: raw[COL_SOURCES].to_numpy(),
            C.PRESET_REASON: "",
            C.PRESET_DETAIL: "",
            target: raw[COL_VALUE].to_numpy(),
        }
    )
    return C.RawPairs(
        dataset=dataset,
        source=path,
        frame=frame,
        targets=[C.TargetColumn(target, units.UNIT_KCAL_PER_MOL, target)],
        settings={"source_filter": FREESOLV_TAG} if freesolv_only else {},
    )


def curate_combisolv(path: str | Path) -> C.CuratedDataset:
    """Curate all 8,780 CombiSolv-Exp pairs."""
    return C.build_curated(read_raw(path))


def curate_freesolv_cgib(path: str | Path) -> C.CuratedDataset:
    """Curate the 560 FreeSolv-tagged (water) rows of CombiSolv-Exp."""
    return C.build_curated(read_raw(path, freesolv_only=True))
