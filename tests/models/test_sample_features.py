"""Per-system sample summaries (pairfactory.ml.sample_features) on a tiny synthetic shard."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pairfactory.errors import UserError
from pairfactory.ml.sample_features import (
    KT_298_KCAL_MOL,
    SYSTEM_COLUMNS,
    QCSettings,
    flag_outliers,
    sample_contacts,
    summarize_systems,
    system_features,
)

# Solute O–H along x, a water-like solvent O 2.9 Å from the solute O: distances
# O–O 2.9, H–O 1.9, O–H 4.9, H–H 3.9 → 1 pair < 2.5 Å, 2 pairs < 3.0 Å, min 1.9 Å, 1 H-bond-like.
GEOM_HBOND = ([8, 1, 8, 1], [0, 0, 1, 1], [0, 0, 0, 1, 0, 0, 2.9, 0, 0, 4.9, 0, 0])
# Two carbons 3.5 Å apart: no contacts, no H-bond.
GEOM_FAR = ([6, 6], [0, 1], [0, 0, 0, 3.5, 0, 0])
# Two carbons 1.0 Å apart: would dominate every contact statistic if it were counted.
GEOM_CLASH = ([6, 6], [0, 1], [0, 0, 0, 1.0, 0, 0])


def _row(system: str, k: int, status: str, energy: float | None, geom: tuple) -> dict:
    z, frag, pos = geom
    return {
        "system_id": system,
        "solute_smiles": f"solute-{system}",
        "solvent_smiles": "O",
        "k": k,
        "status": status,
        "atomic_numbers": z,
        "fragment_index": frag,
        "final_positions_angstrom": pos,
        "interaction_energy_kcal_mol": energy,
    }


def _write_shard(folder: Path) -> Path:
    rows = [
        _row("a", 0, "ok", -3.0, GEOM_HBOND),
        _row("a", 1, "ok", -1.0, GEOM_HBOND),
        _row("a", 2, "ok", -2.0, GEOM_HBOND),
        # b: one failure (its energy must be ignored), one ordinary sample, one outlier (> +20).
        _row("b", 0, "not_converged", -10.0, GEOM_CLASH),
        _row("b", 1, "ok", -1.0, GEOM_FAR),
        _row("b", 2, "ok", 40.0, GEOM_CLASH),
    ]
    schema = pa.schema(
        [
            ("system_id", pa.string()),
            ("solute_smiles", pa.string()),
            ("solvent_smiles", pa.string()),
            ("k", pa.int32()),
            ("status", pa.string()),
            ("atomic_numbers", pa.list_(pa.int8())),
            ("fragment_index", pa.list_(pa.int8())),
            ("final_positions_angstrom", pa.list_(pa.float64())),
            ("interaction_energy_kcal_mol", pa.float64()),
        ]
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "s00000-k000.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    # A hidden temporary file next to it must not be read.
    pq.write_table(pa.Table.from_pylist(rows[:1], schema=schema), folder / ".s00001-k000.tmp")
    return path


def test_sample_contacts_counts_pairs_and_hbonds() -> None:
    c = sample_contacts(*GEOM_HBOND)
    assert (c.contacts_lt_2p5_angstrom, c.contacts_lt_3p0_angstrom, c.hbond_contacts) == (1, 2, 1)
    assert c.min_distance_angstrom == pytest.approx(1.9)
    # Contacts inside one fragment and between two solvent copies do not count; an N×3 array works.
    z = [1, 8, 1, 7]
    frag = [0, 1, 2, 2]
    pos = np.array([[0, 0, 0], [2.0, 0, 0], [2.0, 1.0, 0], [0, 2.4, 0]])
    c2 = sample_contacts(z, frag, pos)
    assert c2.hbond_contacts == 2  # H(solute)…O(copy 1) 2.0 Å and H(solute)…N(copy 2) 2.4 Å
    assert c2.contacts_lt_2p5_angstrom == 3  # plus H(solute)…H(copy 2) at √5 = 2.24 Å
    assert c2.min_distance_angstrom == pytest.approx(2.0)


def test_system_features_exact_values_and_counts(tmp_path: Path) -> None:
    _write_shard(tmp_path / "shards")
    out = system_features(tmp_path / "shards")
    assert list(out.columns) == SYSTEM_COLUMNS
    # Systems in = systems out; every sample is ok or failed; failures counted.
    assert list(out.system_id) == ["a", "b"]
    assert out.n_samples.sum() == 6
    assert (out.n_ok + out.n_failed == out.n_samples).all()
    assert (out.n_used + out.n_qc_flagged == out.n_ok).all()
    a = out.set_index("system_id").loc["a"]
    b = out.set_index("system_id").loc["b"]
    assert (a.n_samples, a.n_ok, a.n_failed, a.n_qc_flagged, a.n_used) == (3, 3, 0, 0, 3)
    assert (b.n_samples, b.n_ok, b.n_failed, b.n_qc_flagged, b.n_used) == (3, 2, 1, 1, 1)

    assert a.e_int_min_kcal_mol == -3.0
    assert a.e_int_median_kcal_mol == -2.0
    assert a.e_int_trimmed_mean_kcal_mol == pytest.approx(-2.0)  # int(0.25 · 3) = 0 cut per side
    assert a.e_int_mad_kcal_mol == 1.0
    assert a.e_int_iqr_kcal_mol == pytest.approx(1.0)  # numpy's linear percentiles: −1.5 − (−2.5)
    kt = KT_298_KCAL_MOL
    expected = -3.0 - kt * math.log((1 + math.exp(-1 / kt) + math.exp(-2 / kt)) / 3)
    assert a.e_int_boltzmann_kcal_mol == pytest.approx(expected)
    assert (a.contacts_lt_2p5_angstrom_median, a.contacts_lt_3p0_angstrom_median) == (1.0, 2.0)
    assert a.min_distance_angstrom_min == pytest.approx(1.9)
    assert (a.hbond_contacts_median, a.hbond_contacts_max, a.hbond_sample_fraction) == (1, 1, 1)
    assert a.hbond_contacts_at_min_energy == 1

    # b: only k = 1 is used; the failure's −10 and the outlier's +40 and clash are not.
    for column in ("min", "median", "trimmed_mean", "boltzmann"):
        assert b[f"e_int_{column}_kcal_mol"] == pytest.approx(-1.0)
    assert (b.e_int_mad_kcal_mol, b.e_int_iqr_kcal_mol) == (0.0, 0.0)
    assert b.min_distance_angstrom_min == pytest.approx(3.5)
    assert (b.contacts_lt_2p5_angstrom_median, b.contacts_lt_3p0_angstrom_median) == (0.0, 0.0)
    assert b.hbond_sample_fraction == 0.0


def test_relative_outlier_rule_flags_only_the_far_high_sample() -> None:
    # 12 kcal/mol is below the absolute +20 bound but 13 above the median with a small MAD; the
    # lowest sample (−2) is the best contact and stays.
    energies = [-2.0, -1.5, -1.0, -1.2, -0.8, -1.1, -1.3, 12.0]
    frame = pd.DataFrame(
        {
            "system_id": "s",
            "solute_smiles": "C",
            "solvent_smiles": "O",
            "k": range(8),
            "status": "ok",
            "interaction_energy_kcal_mol": energies,
        }
    )
    flagged = flag_outliers(frame)
    assert flagged.qc_flagged.tolist() == [False] * 7 + [True]
    # A looser floor keeps it.
    assert not flag_outliers(frame, QCSettings(min_excess_kcal_mol=20.0)).qc_flagged.any()


def test_system_without_usable_samples_keeps_its_row() -> None:
    frame = pd.DataFrame(
        {
            "system_id": ["x", "x"],
            "solute_smiles": "C",
            "solvent_smiles": "O",
            "k": [0, 1],
            "status": ["timeout", "error"],
            "interaction_energy_kcal_mol": [None, None],
        }
    )
    out = summarize_systems(frame)
    assert len(out) == 1
    row = out.iloc[0]
    assert (row.n_samples, row.n_ok, row.n_failed, row.n_used) == (2, 0, 2, 0)
    assert math.isnan(row.e_int_min_kcal_mol) and math.isnan(row.hbond_contacts_max)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no shard files"):
        system_features(tmp_path)
