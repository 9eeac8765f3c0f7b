"""bench/microsolvation_gate.py: the solute–shell energy at the complex's geometry, and the 2D
baseline's out-of-fold prediction read from a results folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from pairfactory.qm.engines.xtb import XtbEngine, XtbSettings

# water: O at the origin, H's in the xy plane (0.96 Å, 104.5°)
WATER = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])
SETTINGS_JSON = json.dumps({"engine": "xtb", **{k: v for k, v in vars(XtbSettings()).items()}})


def _sample(system_id: str, *molecules: np.ndarray) -> dict:
    """Waters at the given positions (the first is the solute), with the complex energy a shard
    would hold."""
    xyz = np.vstack(molecules)
    z = [8, 1, 1] * len(molecules)
    energy = XtbEngine(XtbSettings()).energy(np.array(z), xyz)
    return {
        "sample_id": system_id,
        "system_id": system_id,
        "solute_smiles": "O",
        "k": 0,
        "status": "ok",
        "n_solvent": len(molecules) - 1,
        "atomic_numbers": z,
        "fragment_index": [i for i in range(len(molecules)) for _ in range(3)],
        "final_positions_angstrom": xyz.ravel().tolist(),
        "energy_hartree": energy,
        "interaction_energy_kcal_mol": 0.0,
        "engine_settings_json": SETTINGS_JSON,
    }


def _hbonded_to(donor: np.ndarray) -> np.ndarray:
    """A water whose O lies 2.9 Å from ``donor``'s O along its first O–H bond (a linear H-bond),
    its H's pointing away along the same line."""
    bond = (donor[1] - donor[0]) / np.linalg.norm(donor[1] - donor[0])
    angle = np.arctan2(bond[0], bond[1])
    turn = np.array(
        [[np.cos(angle), np.sin(angle), 0], [-np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    return WATER @ turn.T + donor[0] + 2.9 * bond


def test_the_solute_shell_energy_counts_only_the_solutes_contacts(
    tmp_path: Path, bench_script: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = bench_script("microsolvation_gate")
    far = WATER + [0.0, 30.0, 0.0]  # (aligned dipoles still attract a little at 12 Å)
    failed = {**_sample("failed", WATER, far), "status": "error", "energy_hartree": np.nan}
    failed["fragment_index"] = None  # a complex that could not be built has no atoms
    samples = pd.DataFrame(
        [
            _sample("apart", WATER, far),
            _sample("contact", WATER, _hbonded_to(WATER)),
            # two shell waters bound to each other, both far from the solute: no solute contact
            _sample("shell_only", WATER, far, _hbonded_to(far)),
            failed,
        ]
    )
    cache = tmp_path / "cache.parquet"
    e_vert = gate.vertical_energies(samples, cache)
    assert abs(e_vert[0]) < 0.02
    assert -8.0 < e_vert[1] < -3.0  # a water dimer's H-bond
    assert abs(e_vert[2]) < 0.05  # the shell's own H-bond is not the solute's
    assert np.isnan(e_vert[3])
    # a rerun reads the cache and computes nothing
    monkeypatch.setattr(XtbEngine, "energy", lambda *a, **k: pytest.fail("recomputed"))
    assert np.allclose(gate.vertical_energies(samples, cache)[:3], e_vert[:3])
    # the same sample id with another geometry is not the cached one
    moved = samples.iloc[[1]].copy()
    moved.at[1, "final_positions_angstrom"] = (np.vstack([WATER, far])).ravel().tolist()
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        gate.vertical_energies(moved, cache)


def test_system_summaries_keep_failed_samples_counted(
    tmp_path: Path, bench_script: Callable[[str], ModuleType]
) -> None:
    gate = bench_script("microsolvation_gate")
    far = WATER + [0.0, 30.0, 0.0]
    ok = _sample("s", WATER, _hbonded_to(WATER))
    failed = {**ok, "k": 1, "status": "error", "energy_hartree": np.nan, "fragment_index": None}
    features = gate.system_summaries(gate.sample_table(pd.DataFrame([ok, failed]), None))
    row = features.loc["s"]
    assert (row.n_samples, row.n_ok, row.n_qc_flagged) == (2, 1, 0)
    assert row.e_vert_min_kcal_mol < -3.0 and row.hbond_contacts_max == 1
    apart_table = gate.sample_table(pd.DataFrame([_sample("s", WATER, far)]), None)
    apart = gate.system_summaries(apart_table)
    assert apart.loc["s"].contacts_lt_3p0_angstrom_median == 0


def _write_fold(folder: Path, repeat: int, fold: int, held: dict[str, float], train: list[str]):
    out = folder / "random" / f"r{repeat}-f{fold}"
    out.mkdir(parents=True)
    rows = [(p, "test", v) for p, v in held.items()] + [(p, "train", 99.0) for p in train]
    pd.DataFrame(rows, columns=["pair_id", "role", "y_pred"]).to_parquet(
        out / "predictions.parquet"
    )


def test_out_of_fold_prediction_is_the_mean_over_repeats(
    tmp_path: Path, bench_script: Callable[[str], ModuleType]
) -> None:
    gate = bench_script("microsolvation_gate")
    model = tmp_path / "twin"
    _write_fold(model, 0, 0, {"a": 1.0}, ["b"])
    _write_fold(model, 0, 1, {"b": 2.0}, ["a"])
    _write_fold(model, 1, 0, {"b": 4.0}, ["a"])
    _write_fold(model, 1, 1, {"a": 3.0}, ["b"])
    oof = gate.oof_predictions(model, pd.Index(["a", "b"]))
    assert oof.to_dict() == {"a": 2.0, "b": 3.0}
    # a repeat that misses a pair (an unfinished fold) is refused, not averaged over
    _write_fold(model, 2, 0, {"a": 5.0}, ["b"])
    with pytest.raises(SystemExit, match="repeat 2"):
        gate.oof_predictions(model, pd.Index(["a", "b"]))
