"""Featurization (pairfactory.ml.featurize), the on-disk graph cache (ml.graph_cache), the pair
dataset and collate (ml.datasets), and `pairfactory featurize`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pairfactory.errors import UserError
from pairfactory.ml import featurize, graph_cache
from pairfactory.ml.datasets import PairGraphDataset, collate_pairs
from pairfactory.ml.featurize import (
    ATOM_FEATURE_DIM,
    ATOM_FEATURE_NAMES,
    BOND_FEATURE_DIM,
    BOND_FEATURE_NAMES,
    FeaturizationError,
    featurize_mol,
    featurize_smiles,
)
from pairfactory.ml.graph_cache import GraphCache

torch.set_num_threads(1)
REPO_ROOT = Path(__file__).resolve().parents[2]
FREESOLV = REPO_ROOT / "data" / "freesolv" / "database.txt"


def atom_flags(graph, atom: int) -> set[str]:
    return {
        n for n, v in zip(ATOM_FEATURE_NAMES, graph.ndata["h"][atom].tolist(), strict=True) if v
    }


def bond_flags(graph, edge: int) -> set[str]:
    return {
        n for n, v in zip(BOND_FEATURE_NAMES, graph.edata["e"][edge].tolist(), strict=True) if v
    }


def freesolv_smiles() -> list[str]:
    rows = [
        line.split("; ") for line in FREESOLV.read_text().splitlines() if not line.startswith("#")
    ]
    return [r[1] for r in rows]


def test_feature_sizes_match_the_written_down_lists():
    assert ATOM_FEATURE_DIM == len(ATOM_FEATURE_NAMES) == 51
    assert BOND_FEATURE_DIM == len(BOND_FEATURE_NAMES) == 11
    assert len(set(ATOM_FEATURE_NAMES)) == ATOM_FEATURE_DIM
    for element in ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I", "H", "B", "Si", "Se"):
        assert f"element={element}" in ATOM_FEATURE_NAMES


def test_benzene_is_aromatic_bidirected_and_one_hot():
    g = featurize_smiles("c1ccccc1")
    assert (g.num_nodes(), g.num_edges()) == (6, 12)
    assert g.ndata["h"].dtype == torch.float32 and g.edata["e"].dtype == torch.float32
    for atom in range(6):
        assert atom_flags(g, atom) == {
            "element=C",
            "degree=2",
            "formal_charge=0",
            "hybridization=SP2",
            "aromatic",
            "in_ring",
            "total_h=1",
            "chirality=none",
        }
    src, dst = (t.tolist() for t in g.edges())
    edges = {(s, d): k for k, (s, d) in enumerate(zip(src, dst, strict=True))}
    for (s, d), k in edges.items():
        assert (d, s) in edges  # bidirected, same features both ways
        assert torch.equal(g.edata["e"][k], g.edata["e"][edges[(d, s)]])
        assert bond_flags(g, k) == {
            "bond_type=AROMATIC",
            "conjugated",
            "in_ring",
            "stereo=STEREONONE",
        }
    # 6 one-hot blocks (one column each) + the aromatic and in_ring flags
    assert torch.all(g.ndata["h"].sum(1) == 8)


def test_every_one_hot_block_has_exactly_one_column_set():
    g = featurize_smiles("[O-][N+](=O)c1ccc(C[C@H](N)C(=O)O)cc1/C=C/Cl")
    h = g.ndata["h"]
    col = 0
    for feature in featurize.ATOM_FEATURES:
        block = h[:, col : col + feature.width]
        if isinstance(feature, featurize.OneHotFeature):
            assert torch.all(block.sum(1) == 1), feature.name
        col += feature.width
    assert col == ATOM_FEATURE_DIM


def test_charged_atoms_carry_their_formal_charge():
    g = featurize_smiles("[NH4+]")
    assert {"element=N", "formal_charge=1", "total_h=4", "degree=0"} <= atom_flags(g, 0)
    nitro = featurize_smiles("[O-][N+](=O)c1ccccc1")
    assert "formal_charge=-1" in atom_flags(nitro, 0)
    assert "formal_charge=1" in atom_flags(nitro, 1)
    assert "formal_charge=0" in atom_flags(nitro, 2)


@pytest.mark.parametrize("smiles,element", [("O", "O"), ("[Na+]", "Na"), ("Cl", "Cl"), ("C", "C")])
def test_single_atom_molecule_has_one_node_and_no_edges(smiles, element):
    g = featurize_smiles(smiles)
    assert g.num_nodes() == 1 and g.num_edges() == 0
    assert g.ndata["h"].shape == (1, ATOM_FEATURE_DIM)
    assert g.edata["e"].shape == (0, BOND_FEATURE_DIM)
    assert f"element={element}" in atom_flags(g, 0)


def test_unknown_element_goes_to_other_not_lost():
    g = featurize_smiles("[Fe+2]")
    assert {"element=other", "formal_charge=2"} <= atom_flags(g, 0)


def test_chirality_is_cip_label_and_independent_of_atom_order():
    from rdkit import Chem

    r = featurize_smiles("C[C@@H](N)C(=O)O")
    s = featurize_smiles("C[C@H](N)C(=O)O")
    unspecified = featurize_smiles("CC(N)C(=O)O")
    assert {"chirality=R"} <= atom_flags(r, 1)
    assert {"chirality=S"} <= atom_flags(s, 1)
    assert {"chirality=?"} <= atom_flags(unspecified, 1)
    e = featurize_smiles("C/C=C/C")
    z = featurize_smiles("C/C=C\\C")
    assert "stereo=STEREOE" in bond_flags(e, 2) and "stereo=STEREOZ" in bond_flags(z, 2)

    mol = Chem.MolFromSmiles("C[C@H](N)C(=O)Oc1ccccc1/C=C/Cl")
    perm = list(np.random.default_rng(0).permutation(mol.GetNumAtoms()))
    shuffled = featurize_mol(Chem.RenumberAtoms(mol, [int(i) for i in perm]))
    original = featurize_mol(mol)
    # same atoms (rows) in another order, same bonds
    assert torch.equal(shuffled.ndata["h"], original.ndata["h"][perm])
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(shuffled.edata["e"]) == key(original.edata["e"])


@pytest.mark.parametrize("bad", ["C1CC", "", "gas", "C(C)(C)(C)(C)C"])
def test_unfeaturizable_smiles_raise_a_clear_error(bad):
    with pytest.raises(FeaturizationError, match="cannot featurize SMILES"):
        featurize_smiles(bad)
    assert issubclass(FeaturizationError, UserError)


def test_every_bundled_freesolv_smiles_featurizes():
    cache = GraphCache(None)
    smiles = freesolv_smiles()
    assert len(smiles) == 642
    assert cache.featurize_all(smiles) == {}
    assert len(cache) == 642


# ----------------------------------------------------------------------------------------
# cache
# ----------------------------------------------------------------------------------------


@pytest.fixture
def no_rdkit(monkeypatch):
    """After this fixture, any SMILES parsing through RDKit fails the test."""
    from rdkit import Chem

    def forbidden(*args, **kwargs):
        raise AssertionError("RDKit was called on a cache hit")

    def activate():
        monkeypatch.setattr(Chem, "MolFromSmiles", forbidden)

    return activate


def graphs_equal(a, b) -> bool:
    return (
        a.num_nodes() == b.num_nodes()
        and torch.equal(a.ndata["h"], b.ndata["h"])
        and torch.equal(a.edata["e"], b.edata["e"])
        and all(torch.equal(x, y) for x, y in zip(a.edges(), b.edges(), strict=True))
    )


def test_cache_hit_does_not_call_rdkit_and_disk_round_trip_is_equal(tmp_path, no_rdkit):
    path = tmp_path / "graphs" / "cache.pt"
    cache = GraphCache(path)
    smiles = ["OC(=O)c1ccccc1", "CCO", "O", "[Na+]", "C[C@H](N)C(=O)O"]
    first = {s: cache.get(s) for s in smiles}
    with pytest.raises(FeaturizationError):
        cache.get("C1CC")
    assert cache.stats.misses == 6
    cache.save()
    assert path.exists() and sorted(p.name for p in path.parent.iterdir()) == [
        "cache.pt"
    ]  # no temp left

    no_rdkit()
    assert all(cache.get(s) is first[s] for s in smiles)  # in-memory hit
    reloaded = GraphCache(path)
    for s in smiles:
        assert graphs_equal(reloaded.get(s), first[s])
        assert reloaded.get(s).ndata["h"].dtype == torch.float32
    with pytest.raises(FeaturizationError, match="cannot parse"):
        reloaded.get("C1CC")  # failures are remembered on disk too
    assert reloaded.stats.misses == 0 and reloaded.stats.hits == len(smiles) * 2 + 1


def test_non_canonical_smiles_share_one_entry():
    cache = GraphCache(None)
    a = cache.get("OCC")
    b = cache.get("CCO")
    assert a is b and len(cache) == 1


def test_cache_with_other_feature_spec_is_rebuilt(tmp_path, monkeypatch, caplog):
    path = tmp_path / "cache.pt"
    cache = GraphCache(path)
    cache.get("CCO")
    cache.save()
    assert len(GraphCache(path)) == 1
    monkeypatch.setattr(graph_cache, "FEATURE_SPEC_HASH", "0" * 16)
    with caplog.at_level("WARNING"):
        assert len(GraphCache(path)) == 0
    assert "other features" in caplog.text


def test_failed_cache_save_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "cache.pt"
    cache = GraphCache(path)
    cache.get("CCO")
    cache.save()
    assert path.stat().st_mode & 0o777 != 0o600  # not the temp file's private mode
    before = path.read_bytes()
    cache.get("CCC")

    def broken_save(obj, target):
        Path(target).write_bytes(b"partial")
        raise OSError("disk went away")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk went away"):
        cache.save()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.pt"]


def test_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path, caplog):
    path = tmp_path / "cache.pt"
    path.write_bytes(b"not a torch file")
    with caplog.at_level("WARNING"):
        cache = GraphCache(path)
    assert len(cache) == 0 and "unreadable" in caplog.text
    cache.get("CCO")
    cache.save()
    assert len(GraphCache(path)) == 1


# ----------------------------------------------------------------------------------------
# pair dataset and collate
# ----------------------------------------------------------------------------------------


def pairs_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pair_id": [f"{i:016x}" for i in range(6)],
            "solute_smiles": ["CCO", "C1CC", "c1ccccc1", "CC(=O)O", "[Na+]", "CCN"],
            "solvent_smiles": ["O", "O", "not_a_smiles", "ClC(Cl)Cl", "O", "CO"],
            "value": [-5.0, -1.0, 2.0, float("nan"), -90.0, -4.5],
        }
    )


def test_pair_dataset_reports_rejections_and_counts_reconcile():
    df = pairs_frame()
    ds = PairGraphDataset(df, GraphCache(None))
    assert len(ds) + len(ds.rejected) == len(df)
    assert ds.rows == [0, 4, 5]
    rejected = ds.rejected.set_index("row")
    assert rejected.loc[1, "reason"] == "solute_unfeaturizable"
    assert rejected.loc[2, "reason"] == "solvent_unfeaturizable"
    assert rejected.loc[3, "reason"] == "missing_target"
    assert rejected.loc[2, "pair_id"] == df.loc[2, "pair_id"]
    assert "cannot parse" in rejected.loc[1, "detail"]
    item = ds[1]
    assert item.index == 4 and item.y == -90.0 and item.solute.num_nodes() == 1


def test_pair_dataset_missing_column_is_a_user_error():
    with pytest.raises(UserError, match="lacks column"):
        PairGraphDataset(pairs_frame().drop(columns=["value"]), GraphCache(None))
    ds = PairGraphDataset(
        pairs_frame().rename(columns={"value": "dg"}), GraphCache(None), target_column="dg"
    )
    assert len(ds) == 3


def test_collate_pairs_batches_graphs_targets_and_row_positions():
    ds = PairGraphDataset(pairs_frame(), GraphCache(None))
    batch = collate_pairs([ds[i] for i in range(len(ds))])
    assert len(batch) == 3
    assert batch.solute.batch_size == batch.solvent.batch_size == 3
    assert batch.solute.batch_num_nodes().tolist() == [3, 1, 3]
    assert batch.solvent.batch_num_nodes().tolist() == [1, 1, 2]
    assert batch.solvent.num_edges() == 2
    assert batch.y.dtype == torch.float32 and batch.y.tolist() == [-5.0, -90.0, -4.5]
    assert batch.index.tolist() == [0, 4, 5]
    moved = batch.to("cpu")
    assert torch.equal(moved.y, batch.y)
    with pytest.raises(ValueError):
        collate_pairs([])


def test_featurize_cli_writes_cache_and_rejects(tmp_path):
    from pairfactory.cli import main

    table = tmp_path / "pairs.parquet"
    pairs_frame().to_parquet(table)
    cache, rejects = tmp_path / "cache.pt", tmp_path / "rejects.parquet"
    assert (
        main(["featurize", "--pairs", str(table), "--cache", str(cache), "--rejects", str(rejects)])
        == 0
    )
    assert len(GraphCache(cache)) == 8
    rej = pd.read_parquet(rejects)
    assert sorted(rej["smiles"]) == ["C1CC", "not_a_smiles"]
    assert (
        main(["featurize", "--pairs", str(tmp_path / "missing.parquet"), "--cache", str(cache)])
        == 2
    )
    assert (
        main(["featurize", "--pairs", str(table), str(rejects), "--cache", str(cache)]) == 2
    )  # not a pair table


def test_featurize_help_has_an_example(capsys):
    from pairfactory.cli import main

    with pytest.raises(SystemExit):
        main(["featurize", "--help"])
    assert "example" in capsys.readouterr().out


def test_cache_from_another_rdkit_is_rebuilt(tmp_path, monkeypatch, caplog):
    # The RDKit version is recorded: another version may number or perceive atoms differently.
    path = tmp_path / "cache.pt"
    cache = GraphCache(path)
    cache.get("CCO")
    cache.save()
    assert torch.load(path, weights_only=True)["rdkit_version"] == graph_cache.rdkit_version()
    monkeypatch.setattr(graph_cache, "rdkit_version", lambda: "1999.01.1")
    with caplog.at_level("WARNING"):
        assert len(GraphCache(path)) == 0
    assert "RDKit 20" in caplog.text and "1999.01.1" in caplog.text
