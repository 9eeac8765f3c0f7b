"""Chromophore (Joung et al. 2020): absorption and emission maxima (nm) and ln(lifetime / ns).

CGIB-compatible by default: NaN per target is rejected, the 19 ``gas`` solvent rows are rejected
(gas-phase spectra have no solvent molecule), solid-state/film rows (solvent == chromophore) are
kept
and flagged, repeated measurements of a pair are kept and flagged. The lifetime is stored as its
natural log, as CGIB trains on it; a lifetime <= 0 ns has no log and is rejected.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pairfactory import units
from pairfactory.pairs import curation as C
from pairfactory.pairs import schema as S
from pairfactory.pairs.readers import read_delimited

DATASET = "chromophore"
COL_CHROMOPHORE = "Chromophore"
COL_SOLVENT = "Solvent"
COL_REFERENCE = "Reference"
RAW_TARGET_COLUMNS: dict[str, str] = {
    "absorption_max_nm": "Absorption max (nm)",
    "emission_max_nm": "Emission max (nm)",
    "ln_lifetime_ns": "Lifetime (ns)",
}
GAS_SOLVENT = "gas"


def read_raw(path: str | Path, *, exclude_solid_state: bool = False, hint: str = "") -> C.RawPairs:
    path = Path(path)
    required = [COL_CHROMOPHORE, COL_SOLVENT, *RAW_TARGET_COLUMNS.values()]
    raw = read_delimited(
        path, sep=",", required_columns=required, hint=hint or "pass --chromophore-csv PATH"
    )
    solvents = raw[COL_SOLVENT]
    is_gas = solvents.str.strip().str.lower() == GAS_SOLVENT
    frame = pd.DataFrame(
        {
            S.SOURCE_ROW: range(len(raw)),
            S.SOLUTE_RAW: raw[COL_CHROMOPHORE],
            S.SOLVENT_RAW: solvents,
            C.SOLUTE_INPUT: raw[COL_CHROMOPHORE],
            C.SOLVENT_INPUT: solvents,
            S.SMILES_OVERRIDE: False,
            S.SOLUTE_NAME: None,
            S.SOLVENT_NAME: None,
            # the DOI of the measurement's article: lets users trace (and de-duplicate) repeats
            S.SOURCE_TAGS: raw[COL_REFERENCE] if COL_REFERENCE in raw.columns else None,
            C.PRESET_REASON: is_gas.map({True: S.GAS_PHASE_SOLVENT, False: ""}),
            C.PRESET_DETAIL: is_gas.map(
                {True: "solvent is 'gas' (gas-phase measurement)", False: ""}
            ),
        }
    )
    for target, column in RAW_TARGET_COLUMNS.items():
        frame[target] = raw[column]
    targets = [
        C.TargetColumn("absorption_max_nm", units.UNIT_NM, "absorption_max_nm"),
        C.TargetColumn("emission_max_nm", units.UNIT_NM, "emission_max_nm"),
        C.TargetColumn(
            "ln_lifetime_ns", units.UNIT_LN_NS, "ln_lifetime_ns", transform=C.ln_positive
        ),
    ]
    return C.RawPairs(
        dataset=DATASET,
        source=path,
        frame=frame,
        targets=targets,
        closed_shell_only=False,  # CGIB keeps ionic dyes (e.g. phenolates); so do we
        detect_solid_state=True,
        exclude_solid_state=exclude_solid_state,
        settings={"exclude_solid_state": exclude_solid_state},
    )


def curate_chromophore(path: str | Path, *, exclude_solid_state: bool = False) -> C.CuratedDataset:
    """Curate the Chromophore CSV into three pair tables (see the module docstring for the
    rules)."""
    return C.build_curated(read_raw(path, exclude_solid_state=exclude_solid_state))
