"""Small real shards for the tests that read samples: solutes in water, optimized with GFN2-xTB
through the optimize stage (tblite; a few seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pairfactory.qm.optimize import run_shard
from pairfactory.qm.plan import plan_shards, systems_from_pair_tables
from pairfactory.qm.settings import QmSettings


def water_pairs(solutes: list[str]) -> pd.DataFrame:
    """A FreeSolv-shaped pair table: each solute in water, values 0, 1, 2, ..."""
    return pd.DataFrame(
        {
            "pair_id": [f"p{i:02d}" for i in range(len(solutes))],
            "dataset": "freesolv",
            "solute_smiles": solutes,
            "solvent_smiles": "O",
            "source_row": range(len(solutes)),
            "solid_state": False,
            "value": np.arange(len(solutes), dtype=float),
        }
    )


def optimize_water_pairs(solutes: list[str], shards_dir: Path, parts_cache: Path) -> Path:
    """Two samples of each solute in water (one shard, QM seed 3) written under ``shards_dir``;
    returns the shard's path."""
    systems = systems_from_pair_tables([water_pairs(solutes)])
    spec = plan_shards(
        systems, samples_per_system=2, systems_per_shard=len(solutes), samples_per_shard=2
    )[0]
    settings = QmSettings.from_config(
        {"seed": 3, "engine": {"name": "xtb", "xtb": {"timeout_s": 60}}}
    )
    shard = shards_dir / f"{spec.shard_id}.parquet"
    run_shard(spec, systems, settings, shard, 1, parts_cache=parts_cache, progress=False)
    return shard
