"""Per-system descriptors of a dataset: the implicit-solvent ΔG_solv of each solute in its solvent
(``pairfactory solvation``).

For every system of the dataset's pair tables (all of them, not only the QM subset: one xtb single
point per molecule and solvent costs well under a second), the solute's isolated geometry comes
from the parts cache of the configured engine (optimized once per molecule and engine tag, as the
optimize stage does; computed here when missing), and GFN2-xTB/ALPB ΔG_solv from the xtb program
(``pairfactory.qm.solvation``, cached per molecule × solvent × xtb version). Solvents without
ALPB parameters give a missing value with status ``unparametrized``; a failed part or xtb run
gives a missing value with its status and message. Systems in = rows out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pairfactory.fileio import atomic_write
from pairfactory.qm.parts import PartsCache
from pairfactory.qm.plan import load_systems
from pairfactory.qm.settings import QmSettings
from pairfactory.qm.solvation import STATUS_OK, SolvationCache

log = logging.getLogger(__name__)

DESCRIPTOR_COLUMNS = (
    "system_id",
    "solute_smiles",
    "solvent_smiles",
    "alpb_solvent",
    "status",
    "dg_solv_alpb_kcal_mol",
    "message",
    "xtb_version",
    "geometry_sha256",
)


def solvation_descriptors(
    settings: QmSettings,
    pairs_dir: str | Path,
    dataset: str,
    parts_cache: str | Path,
    solvation_cache: str | Path,
    *,
    threads: int = 1,
    xtb_binary: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per system of ``dataset`` (DESCRIPTOR_COLUMNS)."""
    from tqdm import tqdm

    systems = load_systems(pairs_dir, dataset)
    tag = settings.engine_tag
    parts = PartsCache(parts_cache, settings.build_engine(threads), tag, settings.timeout_s)
    # The value belongs to the engine's geometry: one cache folder per engine tag.
    solvation = SolvationCache(Path(solvation_cache) / tag, xtb_binary=xtb_binary)
    rows = []
    for system in tqdm(
        systems.itertuples(index=False),
        total=len(systems),
        desc=f"solvation {dataset}",
        unit="system",
        disable=not progress,
        mininterval=1.0,
    ):
        part = parts.get(system.solute_smiles)
        row = {
            "system_id": system.system_id,
            "solute_smiles": system.solute_smiles,
            "solvent_smiles": system.solvent_smiles,
            "alpb_solvent": None,
            "status": part.status,
            "dg_solv_alpb_kcal_mol": None,
            "message": part.message or None,
            "xtb_version": None,
            "geometry_sha256": None,
        }
        if part.atomic_numbers is not None and part.positions_angstrom is not None:
            result = solvation.get(
                system.solute_smiles,
                system.solvent_smiles,
                part.atomic_numbers,
                part.positions_angstrom,
                charge=part.charge,
                uhf=part.multiplicity - 1,
            )
            row.update(
                alpb_solvent=result.alpb_solvent,
                status=result.status,
                dg_solv_alpb_kcal_mol=result.dg_solv_kcal_mol,
                message=result.message or None,
                xtb_version=result.xtb_version or None,
                geometry_sha256=result.geometry_sha256,
            )
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(DESCRIPTOR_COLUMNS))
    table["dg_solv_alpb_kcal_mol"] = table["dg_solv_alpb_kcal_mol"].astype("float64")
    if len(table) != len(systems):  # systems in = rows out
        raise AssertionError(f"{len(systems)} systems in, {len(table)} descriptor rows out")
    counts = table["status"].value_counts().to_dict()
    log.info(
        "%s: ΔG_solv(ALPB) for %d of %d systems; by status %s; xtb runs %d, cached %d",
        dataset,
        int((table["status"] == STATUS_OK).sum()),
        len(table),
        counts,
        solvation.computed,
        solvation.loaded,
    )
    return table


def write_descriptors(table: pd.DataFrame, out: str | Path) -> Path:
    out = Path(out)
    atomic_write(out, lambda tmp: table.to_parquet(tmp, index=False))
    return out
