"""A few noisy complexes of a dataset as a chemiscope dataset: the report's interactive 3D views.

For each shard folder (one dataset, one engine tag), the first ``n_systems`` systems with `ok`
samples (in shard order: stable across reruns) and their optimized geometries, each with its
interaction energy, sample index and SMILES, in the JSON layout chemiscope's viewer loads
(https://chemiscope.org/docs/manual/input.html: ``meta``, ``structures`` with ``size``, ``names``,
``x``, ``y``, ``z``, and per-structure ``properties``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairfactory.qm.shards import STATUS_OK, read_shard, shard_paths

VIEW_COLUMNS = [
    "system_id",
    "solute_smiles",
    "solvent_smiles",
    "k",
    "n_solvent",
    "atomic_numbers",
    "final_positions_angstrom",
    "interaction_energy_kcal_mol",
    "status",
]


@dataclass
class ComplexViews:
    """One dataset's views: the chemiscope dataset and a table of what it shows."""

    dataset: str
    engine_tag: str
    chemiscope: dict[str, Any]
    table: pd.DataFrame  # system_id, solute, solvent, k, interaction_energy_kcal_mol


def complex_views(
    shards_dir: str | Path, n_systems: int = 3, max_samples: int = 8
) -> ComplexViews | None:
    """The views of one shard folder (``results/shards/<dataset>/<engine tag>``); None when it
    holds no `ok` sample."""
    from rdkit.Chem import GetPeriodicTable

    shards_dir = Path(shards_dir)
    chosen: list[pd.DataFrame] = []
    systems: list[str] = []
    for path in shard_paths(shards_dir):
        frame = read_shard(path, columns=VIEW_COLUMNS).to_pandas()
        frame = frame[
            (frame["status"] == STATUS_OK) & np.isfinite(frame["interaction_energy_kcal_mol"])
        ]
        for system_id, group in frame.groupby("system_id", sort=False):
            if system_id in systems or len(systems) >= n_systems:
                continue
            systems.append(str(system_id))
            chosen.append(group.sort_values("k").head(max_samples))
        if len(systems) >= n_systems:
            break
    if not chosen:
        return None
    samples = pd.concat(chosen, ignore_index=True)
    periodic = GetPeriodicTable()
    structures = []
    for numbers, positions in zip(
        samples["atomic_numbers"], samples["final_positions_angstrom"], strict=True
    ):
        xyz = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        structures.append(
            {
                "size": int(len(xyz)),
                "names": [periodic.GetElementSymbol(int(z)) for z in numbers],
                "x": xyz[:, 0].round(4).tolist(),
                "y": xyz[:, 1].round(4).tolist(),
                "z": xyz[:, 2].round(4).tolist(),
            }
        )
    energies = samples["interaction_energy_kcal_mol"].astype(float)
    chemiscope = {
        "meta": {
            "name": f"{shards_dir.parent.name}: noisy complexes ({shards_dir.name})",
            "description": (
                "Optimized solute–solvent complexes from random starts; each sample of a pair "
                "is one draw of the noisy distribution the model learns from."
            ),
        },
        "structures": structures,
        "properties": {
            "interaction energy": {
                "target": "structure",
                "values": [float(e) for e in energies],
                "units": "kcal/mol",
            },
            "sample k": {"target": "structure", "values": samples["k"].astype(int).tolist()},
            "pair": {
                "target": "structure",
                "values": [
                    f"{u} in {v}"
                    for u, v in zip(
                        samples["solute_smiles"], samples["solvent_smiles"], strict=True
                    )
                ],
            },
        },
    }
    table = pd.DataFrame(
        {
            "structure": range(len(samples)),
            "solute": samples["solute_smiles"],
            "solvent": samples["solvent_smiles"],
            "k": samples["k"].astype(int),
            "interaction_energy_kcal_mol": energies.round(2),
        }
    )
    return ComplexViews(
        dataset=shards_dir.parent.name,
        engine_tag=shards_dir.name,
        chemiscope=chemiscope,
        table=table,
    )
