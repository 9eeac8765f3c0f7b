"""bench/microsolvation_gate.py: the solute–shell energy at the complex's geometry, and the 2D
baseline's out-of-fold prediction read from a results folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from pairfactory.qm.engines.xtb import XtbEngine, XtbSettings

# water: O at the origin, H's in the xy plane (0.96 Å, 104.5°)
WATER = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])


def _dimer_sample(system_id: str, second: np.ndarray) -> dict:
    """Two waters (the second at ``second``), with the complex energy a shard would hold."""
    xyz = np.vstack([WATER, second])
    z = [8, 1, 1, 8, 1, 1]
    energy = XtbEngine(XtbSettings()).energy(np.array(z), xyz)
    return {
        "system_id": system_id,
        "k": 0,
        "status": "ok",
        "atomic_numbers": z,
        "fragment_index": [0, 0, 0, 1, 1, 1],
        "final_positions_angstrom": xyz.ravel().tolist(),
        "energy_hartree": energy,
    }


def _hbonded_water() -> np.ndarray:
    """A second water whose O lies 2.9 Å from the first's O along its O–H bond (a linear H-bond),
    its H's pointing away along the same line."""
    bond = WATER[1] / np.linalg.norm(WATER[1])
    angle = np.arctan2(bond[0], bond[1])
    turn = np.array(
        [[np.cos(angle), np.sin(angle), 0], [-np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    return WATER @ turn.T + 2.9 * bond


def test_the_solute_shell_energy_vanishes_apart_and_binds_in_contact(
    tmp_path: Path, bench_script: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = bench_script("microsolvation_gate")
    samples = pd.DataFrame(
        [
            _dimer_sample("apart", WATER + [0.0, 30.0, 0.0]),
            _dimer_sample("contact", _hbonded_water()),
            {**_dimer_sample("failed", WATER + [0.0, 30.0, 0.0]), "status": "failed"},
        ]
    )
    samples.loc[2, "energy_hartree"] = np.nan
    cache = tmp_path / "cache.parquet"
    e_vert = gate.vertical_energies(samples, cache)
    assert abs(e_vert[0]) < 0.02
    assert -8.0 < e_vert[1] < -3.0  # a water dimer's H-bond
    assert np.isnan(e_vert[2])
    # a rerun reads the cache and computes nothing
    monkeypatch.setattr(XtbEngine, "energy", lambda *a, **k: pytest.fail("recomputed"))
    assert np.allclose(gate.vertical_energies(samples, cache)[:2], e_vert[:2])


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
