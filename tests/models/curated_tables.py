"""Real curated pair tables for the protocol tests: the bundled FreeSolv file, curated once."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from pairfactory.pairs.writer import write_pair_table

REPO = Path(__file__).resolve().parents[2]

__all__ = ["freesolv_rows", "write_pair_table"]


@functools.lru_cache(maxsize=1)
def _curated_freesolv() -> pd.DataFrame:
    from pairfactory.pairs import curate

    return curate("freesolv", input_path=REPO / "data" / "freesolv" / "database.txt").tables[
        "dg_hydration_kcal_mol"
    ]


def freesolv_rows(n: int, dataset: str = "freesolv") -> pd.DataFrame:
    """The first ``n`` rows of the real curated FreeSolv pair table, labelled as ``dataset`` (e.g.
    ``freesolv_cgib``, so that a report puts the published numbers next to ours)."""
    frame = _curated_freesolv().head(n).copy()
    frame["dataset"] = dataset
    return frame.reset_index(drop=True)
