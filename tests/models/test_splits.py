"""Fold splits: deterministic, disjoint, covering; grouped splits keep groups together."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pairfactory.errors import UserError
from pairfactory.ml.splits import (
    canonical_smiles,
    make_splits,
    murcko_scaffolds,
    random_kfold,
    scaffold_split,
    solute_split,
)


def _assert_partition(folds, n):
    held_count = np.zeros(n, dtype=int)
    for split in folds:
        parts = [split.train, split.valid, split.test]
        assert all(len(p) > 0 for p in parts)
        joined = np.concatenate(parts)
        assert len(joined) == n and len(np.unique(joined)) == n  # disjoint and covering
        held_count[split.valid] += 1
        held_count[split.test] += 1
    assert np.all(held_count == 1), "every row is held out in exactly one fold"


@pytest.mark.parametrize("n", [10, 23, 642])
def test_random_kfold_partitions_and_is_deterministic(n):
    folds = random_kfold(n, n_folds=5, seed=3)
    _assert_partition(folds, n)
    again = random_kfold(n, n_folds=5, seed=3)
    for a, b in zip(folds, again):
        assert np.array_equal(a.train, b.train) and np.array_equal(a.valid, b.valid)
        assert np.array_equal(a.test, b.test)
    other = random_kfold(n, n_folds=5, seed=4)
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(folds, other))
    # CGIB cuts the held-out fold in half: validation gets int(len/2) rows
    for split in folds:
        held = len(split.valid) + len(split.test)
        assert len(split.valid) == held // 2
    roles = folds[0].role_of_rows()
    assert set(roles) == {"train", "valid", "test"} and (roles == "test").sum() == len(
        folds[0].test
    )


def test_random_kfold_rejects_too_few_rows():
    with pytest.raises(UserError, match="cannot make 5 folds from 9 rows"):
        random_kfold(9, n_folds=5)
    with pytest.raises(UserError, match="at least 2"):
        random_kfold(100, n_folds=1)


@pytest.fixture(scope="module")
def mnsol_solutes(mnsol_csv) -> list[str]:
    table = pd.read_csv(mnsol_csv, sep=";")
    return table["SoluteSMILES"].tolist()[:600]


def test_solute_split_shares_no_solute(mnsol_solutes):
    folds = solute_split(mnsol_solutes, n_folds=5, seed=0)
    _assert_partition(folds, len(mnsol_solutes))
    canon = np.asarray(canonical_smiles(mnsol_solutes), dtype=object)
    for split in folds:
        train = set(canon[split.train])
        assert not train & set(canon[split.test])
        assert not train & set(canon[split.valid])
    # deterministic, and the seed changes the assignment
    again = solute_split(mnsol_solutes, n_folds=5, seed=0)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again))
    other = solute_split(mnsol_solutes, n_folds=5, seed=1)
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(folds, other))


def test_solute_split_canonicalises_before_grouping():
    # Two spellings of ethanol must be one group.
    solutes = ["CCO", "OCC"] + [f"C{'C' * i}Cl" for i in range(12)]
    folds = solute_split(solutes, n_folds=5, seed=0)
    for split in folds:
        in_train = {0, 1} & set(split.train.tolist())
        assert in_train in (set(), {0, 1})


def test_scaffold_split_groups_scaffolds(mnsol_solutes):
    folds = scaffold_split(mnsol_solutes, n_folds=5)
    _assert_partition(folds, len(mnsol_solutes))
    scaffolds = np.asarray(murcko_scaffolds(mnsol_solutes), dtype=object)
    for split in folds:
        train = set(scaffolds[split.train])
        assert not train & set(scaffolds[np.concatenate([split.valid, split.test])])
    again = make_splits("scaffold", mnsol_solutes, n_folds=5, seed=123)  # seed-free by design
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again))


def test_murcko_scaffolds_of_known_molecules():
    got = murcko_scaffolds(["Cc1ccccc1", "Oc1ccc(Cl)cc1", "CCCO", "C1CCCCC1C(=O)O"])
    assert got[0] == got[1] == "c1ccccc1"
    assert got[2] == "acyclic:CCCO"
    assert got[3] == "C1CCCCC1"


def test_make_splits_errors():
    with pytest.raises(UserError, match="unknown split 'time'"):
        make_splits("time", ["C"] * 20)
    with pytest.raises(UserError, match="does not parse"):
        make_splits("solute", ["C", "not-a-smiles("] * 10)
    with pytest.raises(UserError, match="groups"):
        make_splits("solute", ["CCO"] * 20)


def test_oversized_group_fills_a_fold_and_is_cut_into_valid_and_test():
    from pairfactory.ml.splits import group_kfold

    labels = ["big"] * 30 + [f"g{i}" for i in range(20)]
    folds = group_kfold(labels, n_folds=5, seed=0)
    _assert_partition(folds, len(labels))
    big_rows = set(range(30))
    holding = [s for s in folds if big_rows & set(s.valid.tolist())]
    assert len(holding) == 1
    split = holding[0]
    assert set(split.valid.tolist()) | set(split.test.tolist()) == big_rows  # alone in its fold
    assert not big_rows & set(split.train.tolist())
    for other in folds:
        if other is not split:
            assert big_rows <= set(other.train.tolist())
