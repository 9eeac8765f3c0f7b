"""Sample sets on small real shards (GFN2-xTB through the optimize stage): every pair-table row
accounted for, uncovered pairs kept, the atom correspondence proven edge by edge, and the
supervision built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write
from pairfactory.ml.datasets import AUX_TARGETS, PairGraphDataset, collate_pairs
from pairfactory.ml.graph_cache import GraphCache
from pairfactory.ml.sample_sets import (
    SampleSetSettings,
    build_sample_sets,
    decoy_positions,
    graph_topology,
    supervision_for,
    topology_problem,
)
from pairfactory.qm.plan import system_id_for
from pairfactory.qm.shards import SHARD_SCHEMA, read_shard
from real_shards import optimize_water_pairs, water_pairs

SOLUTES = ["CCO", "CC(=O)O"]  # ethanol, acetic acid: in water, 2 samples each
UNCOVERED = "CCCl"  # in the pair table, never sampled


@pytest.fixture(scope="module")
def real_shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sample_sets")
    shards_dir = root / "shards"
    shard = optimize_water_pairs(SOLUTES, shards_dir, root / "parts")
    return {"root": root, "shards_dir": shards_dir, "shard": shard}


def test_every_row_is_accounted_for_and_uncovered_pairs_stay(real_shards: dict[str, Any]) -> None:
    pairs = water_pairs([*SOLUTES, UNCOVERED, "CCO"])  # a duplicate row of a covered system too
    table = build_sample_sets(pairs, real_shards["shards_dir"], GraphCache(None))
    coverage = table.coverage
    assert list(coverage["pair_id"]) == list(pairs["pair_id"])  # rows in = rows out, in order
    assert list(coverage["covered"]) == [True, True, False, True]
    uncovered = coverage.iloc[2]
    assert uncovered["n_samples"] == 0 and uncovered["n_kept"] == 0
    assert (coverage["n_ok"] + coverage["n_failed"] == coverage["n_samples"]).all()
    covered = coverage[coverage["covered"]]
    assert (covered["n_samples"] == 2).all()
    # real optimized complexes of these molecules keep their bonds: nothing mismatched
    assert (covered["n_topology_mismatch"] == 0).all() and (covered["n_kept"] == 2).all()
    assert set(table.sets) == {system_id_for(s, "O") for s in SOLUTES}
    summary = table.summary()
    assert summary["pairs"] == 4 and summary["samples"] == 4 and summary["kept"] == 4
    # the dose-response cap keeps the lowest k and counts the rest
    capped = build_sample_sets(
        pairs,
        real_shards["shards_dir"],
        GraphCache(None),
        SampleSetSettings(max_samples_per_pair=1),
    )
    assert list(capped.coverage["n_kept"]) == [1, 1, 0, 1]
    assert list(capped.coverage["n_over_cap"]) == [1, 1, 0, 1]
    assert all(s.k.tolist() == [0] for s in capped.sets.values())


def test_failed_samples_are_counted_not_kept(real_shards: dict[str, Any], tmp_path: Path) -> None:
    shard = read_shard(real_shards["shard"]).to_pandas()
    shard.loc[0, "status"] = "not_converged"
    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(
        pa.Table.from_pandas(shard, schema=SHARD_SCHEMA, preserve_index=False),
        folder / real_shards["shard"].name,
    )
    table = build_sample_sets(water_pairs(SOLUTES), folder, GraphCache(None))
    row = table.coverage.set_index("system_id").loc[shard.loc[0, "system_id"]]
    assert (row["n_samples"], row["n_ok"], row["n_failed"], row["n_kept"]) == (2, 1, 1, 1)


def test_correspondence_is_proven_edge_by_edge(real_shards: dict[str, Any]) -> None:
    cache = GraphCache(None)
    records = read_shard(real_shards["shard"]).to_pylist()
    record = next(r for r in records if r["solute_smiles"] == "CC(=O)O")
    solute = record["solute_smiles"]
    numbers, bonds = graph_topology(solute, cache.get(solute))
    assert list(numbers) == [6, 6, 8, 8] and bonds == {(0, 1), (1, 2), (1, 3)}
    frag = np.asarray(record["fragment_index"])
    z = np.asarray(record["atomic_numbers"])[frag == 0]
    xyz = np.asarray(record["final_positions_angstrom"]).reshape(-1, 3)[frag == 0]
    # every graph bond is a covalent contact of the optimized sample, and nothing else is
    assert topology_problem(numbers, bonds, z, xyz, 0.4) is None
    # the methyl and the carboxyl carbon swapped: same elements, other bonds
    swapped = xyz.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    problem = topology_problem(numbers, bonds, z, swapped, 0.4)
    assert problem is not None and "not bonded in the graph but" in problem
    # another atom order (oxygen first) fails on the elements
    problem = topology_problem(numbers, bonds, z[::-1].copy(), xyz[::-1].copy(), 0.4)
    assert problem is not None and "element" in problem
    # a broken bond: the hydroxyl oxygen pulled 2 Å away from the carbon
    stretched = xyz.copy()
    bond = stretched[3] - stretched[1]
    stretched[3] += 2.0 * bond / np.linalg.norm(bond)
    problem = topology_problem(numbers, bonds, z, stretched, 0.4)
    assert problem is not None and "atoms 1-3 are bonded in the graph but" in problem


def test_supervision_contact_maps_graphs_and_decoys(real_shards: dict[str, Any]) -> None:
    cache = GraphCache(None)
    pairs = water_pairs([*SOLUTES, UNCOVERED])
    settings = SampleSetSettings(decoys_per_sample=2, seed=5)
    table = build_sample_sets(pairs, real_shards["shards_dir"], cache, settings)
    sid = system_id_for(SOLUTES[0], "O")
    descriptors = pd.DataFrame({"dg_solv_alpb_kcal_mol": [-4.5]}, index=[sid])
    supervision = supervision_for(pairs, table, settings, descriptors=descriptors)
    assert set(supervision) == set(pairs["pair_id"])
    first, uncovered = supervision["p00"], supervision["p02"]
    n_solute, n_solvent = cache.get(SOLUTES[0]).num_nodes(), cache.get("O").num_nodes()
    assert first.contact_map.shape == (n_solute, n_solvent)
    assert ((first.contact_map >= 0) & (first.contact_map <= 1)).all()
    assert first.contact_map.max() > 0  # the water touches the solute in every sample
    assert len(first.complexes) == 2 and len(first.decoys) == 4
    for decoy, positive in zip(first.decoys, first.complexes * 2, strict=False):
        # same composition: a composition-only scorer cannot tell a decoy from a sample
        assert sorted(decoy.ndata["z"].tolist()) == sorted(positive.ndata["z"].tolist())
        assert (decoy.ndata["fragment"] == positive.ndata["fragment"]).all()
    assert first.aux_targets[AUX_TARGETS.index("dg_solv_alpb_kcal_mol")] == -4.5
    energies = table.sets[sid].interaction_energy_kcal_mol
    assert np.isclose(first.aux_targets[AUX_TARGETS.index("e_int_min_kcal_mol")], energies.min())
    assert np.isnan(supervision["p01"].aux_targets[AUX_TARGETS.index("dg_solv_alpb_kcal_mol")])
    assert np.isnan(uncovered.aux_targets).all()
    assert uncovered.contact_map is None and not uncovered.complexes and not uncovered.decoys
    # the same settings give the same decoys
    again = supervision_for(pairs, table, settings)
    assert all(
        np.array_equal(a.edata["distance_angstrom"], b.edata["distance_angstrom"])
        for a, b in zip(again["p00"].decoys, first.decoys, strict=True)
    )
    # and the pair dataset batches them with its graphs
    dataset = PairGraphDataset(pairs, cache, supervision=supervision)
    batch = collate_pairs([dataset[0], dataset[2]])
    sup = batch.supervision
    n_uncovered = cache.get(UNCOVERED).num_nodes()
    assert sup.contact_maps.shape == (2, max(n_solute, n_uncovered), n_solvent)
    assert sup.contact_mask[0].any() and not sup.contact_mask[1].any()
    assert sup.complexes.batch_size == 2 and (sup.complex_pair == 0).all()
    assert sup.aux_mask.shape == (2, len(AUX_TARGETS))


def test_hydrogens_are_nodes_of_the_3d_graphs_only_when_asked(real_shards: dict[str, Any]) -> None:
    cache = GraphCache(None)
    pairs = water_pairs(SOLUTES[:1])
    sid = system_id_for(SOLUTES[0], "O")
    by_setting = {}
    for hydrogens in (False, True):
        settings = SampleSetSettings(decoys_per_sample=1, seed=5, complex_hydrogens=hydrogens)
        table = build_sample_sets(pairs, real_shards["shards_dir"], cache, settings)
        by_setting[hydrogens] = supervision_for(pairs, table, settings)["p00"]
        numbers = table.sets[sid].atomic_numbers
        expected = numbers if hydrogens else numbers[numbers != 1]
        for graph in by_setting[hydrogens].complexes + by_setting[hydrogens].decoys:
            assert sorted(graph.ndata["z"].tolist()) == sorted(expected.tolist())
    assert len(table.sets[sid].atomic_numbers) == 12  # ethanol and one water: 9 + 3 atoms
    # the contact map is over the 2D graphs' heavy atoms either way
    assert np.array_equal(by_setting[False].contact_map, by_setting[True].contact_map)


def test_a_decoy_touches_at_the_samples_own_closest_contact() -> None:
    rng = np.random.default_rng(0)
    # a 3-atom "solute" and a 2-atom "solvent" 3.1 Å away
    numbers = np.array([6, 6, 8, 8, 1])
    fragments = np.array([0, 0, 0, 1, 1])
    xyz = np.array([[0, 0, 0], [1.5, 0, 0], [2.2, 1.1, 0], [2.2, 4.2, 0], [2.2, 5.2, 0]], float)
    moved = decoy_positions(numbers, fragments, xyz, rng)
    assert moved is not None
    np.testing.assert_allclose(moved[:3], xyz[:3])  # the solute stays
    # rigid: the solvent's internal distance is unchanged
    assert np.isclose(np.linalg.norm(moved[3] - moved[4]), 1.0)
    closest = np.min(np.linalg.norm(moved[3:, None] - moved[None, :3], axis=-1))
    assert np.isclose(closest, 3.1, atol=1e-6)
    assert not np.allclose(moved[3:], xyz[3:])


def test_every_solvent_copy_of_a_decoy_keeps_its_own_contact_with_the_solute() -> None:
    # two water-like copies on either side of a 3-atom solute, 2.9 and 3.4 Å from it, 6.3 Å apart
    numbers = np.array([6, 6, 6, 8, 1, 8, 1])
    fragments = np.array([0, 0, 0, 1, 1, 2, 2])
    xyz = np.array(
        [
            [0, 0, 0],
            [1.5, 0, 0],
            [3.0, 0, 0],
            [1.5, 2.9, 0],
            [1.5, 3.9, 0],
            [1.5, -3.4, 0],
            [1.5, -4.4, 0],
        ],
        float,
    )

    def closest(positions: np.ndarray, a: int, b: int) -> float:
        pa, pb = positions[fragments == a], positions[fragments == b]
        return float(np.min(np.linalg.norm(pa[:, None] - pb[None], axis=-1)))

    rng = np.random.default_rng(1)
    for _ in range(10):
        moved = decoy_positions(numbers, fragments, xyz, rng)
        assert moved is not None
        np.testing.assert_allclose(moved[:3], xyz[:3])
        for copy in (1, 2):
            assert np.isclose(closest(moved, copy, 0), closest(xyz, copy, 0), atol=1e-6)
        assert closest(moved, 1, 2) >= closest(xyz, 1, 2) - 1e-6


def test_only_training_pairs_get_supervision(real_shards: dict[str, Any]) -> None:
    # The leakage rule: in every fold, supervision exists for training pairs only, and the
    # validation and test datasets carry none, so no held-out sample can reach a loss.
    from pairfactory.ml.evaluate import _datasets_for_fold
    from pairfactory.ml.sample_sets import fold_samples
    from pairfactory.ml.splits import make_splits

    pairs = water_pairs([*SOLUTES, UNCOVERED, "CCC", "CCN", "CCCO"])
    cache = GraphCache(None)
    folds = make_splits("random", pairs["solute_smiles"].tolist(), n_folds=3, seed=0)
    for split in folds:
        samples = fold_samples(pairs, split.train, real_shards["shards_dir"], cache, SETTINGS)
        train_ids = set(pairs["pair_id"].iloc[split.train])
        assert set(samples.supervision) == train_ids
        datasets, _ = _datasets_for_fold(pairs, split, cache, samples.supervision)
        assert all(item.supervision is not None for item in datasets["train"])
        for role in ("valid", "test"):
            assert all(item.supervision is None for item in datasets[role])
        # coverage (reporting only) is known for every row
        assert list(samples.covered.index) == list(pairs["pair_id"])
        assert samples.summary["train_pairs_supervised"] == len(train_ids)
        # auxiliary targets standardized with the training pairs' own statistics
        aux = np.stack([s.aux_targets for s in samples.supervision.values()])
        column = AUX_TARGETS.index("e_int_min_kcal_mol")
        values = aux[:, column][np.isfinite(aux[:, column])]
        if len(values) > 1:
            assert np.isclose(values.mean(), 0.0, atol=1e-5)
            assert np.isclose(values.std(), 1.0, atol=1e-4)
    half = fold_samples(
        pairs,
        folds[0].train,
        real_shards["shards_dir"],
        cache,
        SampleSetSettings(train_pair_fraction=0.5, seed=1),
    )
    assert len(half.supervision) == round(0.5 * len(folds[0].train))
    # a model that does not learn from samples gets coverage only, and reads no descriptor table
    coverage_only = fold_samples(
        pairs,
        folds[0].train,
        real_shards["shards_dir"],
        cache,
        SETTINGS,
        descriptors_path=real_shards["shards_dir"] / "no_such_descriptors.parquet",
        with_supervision=False,
    )
    assert coverage_only.supervision == {} and coverage_only.covered.sum() == 2
    assert coverage_only.summary["descriptors"] is None
    assert set(half.supervision) <= set(pairs["pair_id"].iloc[folds[0].train])


SETTINGS = SampleSetSettings(decoys_per_sample=1)


def test_a_table_is_read_once_per_process_until_a_shard_changes(
    real_shards: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from pairfactory.ml import sample_sets
    from pairfactory.ml.splits import make_splits

    shards_dir = tmp_path / "shards"
    shutil.copytree(real_shards["shards_dir"], shards_dir)
    reads = []
    real_read = sample_sets.read_samples
    monkeypatch.setattr(
        sample_sets, "read_samples", lambda *a, **k: reads.append(a) or real_read(*a, **k)
    )
    pairs = water_pairs([*SOLUTES, UNCOVERED, "CCC", "CCN", "CCCO"])
    cache = GraphCache(None)
    folds = make_splits("random", pairs["solute_smiles"].tolist(), n_folds=3, seed=0)
    first = [sample_sets.fold_samples(pairs, f.train, shards_dir, cache, SETTINGS) for f in folds]
    assert len(reads) == 1  # three folds, one read
    # the same supervision as a table built from scratch for that fold
    fresh = sample_sets.supervision_for(
        pairs.iloc[folds[1].train],
        sample_sets.build_sample_sets(pairs, shards_dir, cache, SETTINGS),
        SETTINGS,
    )
    sample_sets.standardize_aux_targets(fresh)
    assert set(fresh) == set(first[1].supervision)
    for pair_id, want in fresh.items():
        got = first[1].supervision[pair_id]
        np.testing.assert_array_equal(got.aux_targets, want.aux_targets)
        assert len(got.complexes) == len(want.complexes) and len(got.decoys) == len(want.decoys)
        for a, b in zip(got.complexes + got.decoys, want.complexes + want.decoys, strict=True):
            assert torch.equal(a.edata["distance_angstrom"], b.edata["distance_angstrom"])
    # the memo still holds the table; a rewritten shard is read again
    reads.clear()
    sample_sets.fold_samples(pairs, folds[0].train, shards_dir, cache, SETTINGS)
    assert reads == []
    shard = next(shards_dir.glob("*.parquet"))
    pq.write_table(pq.read_table(shard), shard)
    sample_sets.fold_samples(pairs, folds[0].train, shards_dir, cache, SETTINGS)
    assert len(reads) == 1


def test_a_descriptor_table_is_read_once_per_version_and_callers_get_their_own_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pairfactory.ml import sample_sets

    path = tmp_path / "alpb.parquet"
    ids = [system_id_for(s, "O") for s in SOLUTES]

    def write(values: list[float]) -> None:  # as `pairfactory solvation` writes it: a new file
        frame = pd.DataFrame({"system_id": ids, "dg_solv_alpb_kcal_mol": values})
        atomic_write(path, lambda tmp: frame.to_parquet(tmp))

    write([-5.0, -6.0])
    reads: list[Path] = []
    real_read = pd.read_parquet
    monkeypatch.setattr(
        sample_sets.pd, "read_parquet", lambda p, *a, **k: reads.append(p) or real_read(p, *a, **k)
    )
    first = sample_sets.read_descriptors(path)
    first.loc[ids[0], "dg_solv_alpb_kcal_mol"] = 99.0  # a caller's change stays its own
    again = sample_sets.read_descriptors(path)
    assert len(reads) == 1
    assert list(again["dg_solv_alpb_kcal_mol"]) == [-5.0, -6.0]
    write([-5.0, -7.25])  # a rebuilt table is read again
    assert list(sample_sets.read_descriptors(path)["dg_solv_alpb_kcal_mol"]) == [-5.0, -7.25]
    assert len(reads) == 2


def test_a_table_built_for_some_solvents_is_not_a_tables_own(tmp_path: Path) -> None:
    from pairfactory.ml import sample_sets
    from pairfactory.qm.descriptors import SELECTED_SOLVENTS_ATTR

    assert sample_sets.SELECTED_SOLVENTS_ATTR == SELECTED_SOLVENTS_ATTR  # the copy ml keeps
    pairs = water_pairs(SOLUTES)
    frame = pd.DataFrame(
        {
            "system_id": [system_id_for(s, "O") for s in SOLUTES],
            "dg_solv_alpb_kcal_mol": [-5.0, -6.0],
        }
    )
    full, narrowed = tmp_path / "full.parquet", tmp_path / "water.parquet"
    frame.to_parquet(full, index=False)
    frame.attrs[SELECTED_SOLVENTS_ATTR] = ["[H]O[H]"]
    frame.to_parquet(narrowed, index=False)
    assert sample_sets.descriptor_table_solvents(full) == []
    assert sample_sets.descriptor_table_solvents(narrowed) == ["[H]O[H]"]
    sample_sets.require_every_solvent(narrowed, pairs)  # water pairs, compared as molecules
    in_octanol = pairs.assign(solvent_smiles=["O", "CCCCCCCCO"])
    sample_sets.require_every_solvent(full, in_octanol)
    with pytest.raises(UserError, match=r"holds only the systems in solvent\(s\) \[H\]O\[H\]"):
        sample_sets.require_every_solvent(narrowed, in_octanol)


def test_schema_defaults_are_the_settings_defaults() -> None:
    from pairfactory.config import default_config

    section = default_config()["evaluate"]["samples"]
    defaults = SampleSetSettings()
    assert section == {name: getattr(defaults, name) for name in section}
