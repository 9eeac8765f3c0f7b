"""Curation stage: raw datasets -> clean solute–solvent pair tables (docs/architecture.md §1).

Public API::

    from pairfactory.pairs import DATASETS, curate, write_curated, read_pair_table
    curated = curate("mnsol", data_dir="../shared/data")      # or input_path=...
    write_curated(curated, "results/pairs")                   # -> results/pairs/mnsol/...
    table = read_pair_table("results/pairs/mnsol/dg_solv_kcal_mol.parquet")

Heavy imports (RDKit) happen only when SMILES are canonicalised.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pairfactory.errors import UserError
from pairfactory.pairs.registry import (
    DATASETS,
    DatasetSpec,
    TargetSpec,
    default_input_path,
    get_spec,
    resolve_input_path,
)

if TYPE_CHECKING:
    from pairfactory.pairs.curation import CuratedDataset, ReconciliationError, make_pair_id
    from pairfactory.pairs.writer import read_pair_table, read_rejects, write_curated

# pandas/pyarrow load on first use, so that `pairfactory --help` (which imports pairs.cli) stays
# fast
_LAZY = {
    "CuratedDataset": "pairfactory.pairs.curation",
    "ReconciliationError": "pairfactory.pairs.curation",
    "make_pair_id": "pairfactory.pairs.curation",
    "read_pair_table": "pairfactory.pairs.writer",
    "read_rejects": "pairfactory.pairs.writer",
    "write_curated": "pairfactory.pairs.writer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "CuratedDataset",
    "DatasetSpec",
    "ReconciliationError",
    "TargetSpec",
    "curate",
    "default_input_path",
    "get_spec",
    "make_pair_id",
    "read_pair_table",
    "read_rejects",
    "resolve_input_path",
    "write_curated",
]


def curate(
    dataset: str,
    input_path: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    exclude_solid_state: bool = False,
    overrides_path: str | Path | None = None,
) -> CuratedDataset:
    """Curate one dataset of DATASETS into pair tables (one per target), rejects and a summary.

    ``input_path`` is the raw file; without it the file is looked up under ``data_dir`` (a folder
    laid out like the shared data folder) or, for Chromophore and FreeSolv, in the repository.
    ``exclude_solid_state`` rejects Chromophore's solid/film rows instead of flagging them;
    ``overrides_path`` replaces the bundled MNSol override table.
    """
    spec = get_spec(dataset)
    path = resolve_input_path(dataset, input_path, data_dir)
    if exclude_solid_state and dataset != "chromophore":
        # silently ignoring it would suggest solid-state rows exist elsewhere
        raise UserError(f"exclude_solid_state applies to chromophore only, not {spec.name}")
    if overrides_path is not None and dataset != "mnsol":
        raise UserError(f"overrides_path applies to mnsol only, not {spec.name}")
    if dataset == "chromophore":
        from pairfactory.pairs.chromophore import curate_chromophore

        return curate_chromophore(path, exclude_solid_state=exclude_solid_state)
    if dataset == "freesolv":
        from pairfactory.pairs.freesolv import curate_freesolv

        return curate_freesolv(path)
    if dataset == "freesolv_cgib":
        from pairfactory.pairs.combisolv import curate_freesolv_cgib

        return curate_freesolv_cgib(path)
    if dataset == "mnsol":
        from pairfactory.pairs.mnsol import curate_mnsol

        return curate_mnsol(path, overrides_path=overrides_path)
    if dataset == "combisolv":
        from pairfactory.pairs.combisolv import curate_combisolv

        return curate_combisolv(path)
    raise AssertionError(f"dataset {dataset!r} is registered but has no curation function")
