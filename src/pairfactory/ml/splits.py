"""Seeded cross-validation folds over a pair table: random (CGIB style), solute-grouped and
scaffold.

Every splitter returns one :class:`FoldSplit` per fold. Within a fold the three index arrays are
disjoint and together cover every row ``0 … n-1`` exactly once; across folds every row is held out
(valid or test) exactly once. The held-out fold is cut into validation and test halves as in the
CGIB training script (Lee et al., ICML 2023): the validation half picks the epoch, the test half
is what gets reported.

Indices are positions in the pair table as read (``iloc``), so a split depends only on the table's
row order, ``n_folds`` and the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from pairfactory.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from rdkit import Chem

SPLIT_KINDS: tuple[str, ...] = ("random", "solute", "scaffold")
SplitKind = Literal["random", "solute", "scaffold"]
ROLE_TRAIN, ROLE_VALID, ROLE_TEST = "train", "valid", "test"
ROLES: tuple[str, ...] = (ROLE_TRAIN, ROLE_VALID, ROLE_TEST)


@dataclass(frozen=True)
class FoldSplit:
    """Row positions of one fold. Arrays are sorted int64."""

    fold: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(len(self.train) + len(self.valid) + len(self.test))

    def role_of_rows(self) -> np.ndarray:
        """An array of length ``n_rows`` holding 'train' / 'valid' / 'test' per row position."""
        roles = np.empty(self.n_rows, dtype=object)
        roles[self.train] = ROLE_TRAIN
        roles[self.valid] = ROLE_VALID
        roles[self.test] = ROLE_TEST
        return roles

    def sizes(self) -> dict[str, int]:
        return {ROLE_TRAIN: len(self.train), ROLE_VALID: len(self.valid), ROLE_TEST: len(self.test)}


def _check_sizes(n: int, n_folds: int) -> None:
    if n_folds < 2:
        raise UserError(f"n_folds must be at least 2 (got {n_folds}); use 5 for the CGIB protocol")
    # Each held-out fold needs at least one validation and one test row.
    if n < 2 * n_folds:
        raise UserError(
            f"cannot make {n_folds} folds from {n} rows: each fold needs at least 2 held-out rows "
            f"(one validation, one test); use fewer folds or a larger table"
        )


def _fold_split(
    fold: int, n: int, train: Sequence[int], valid: Sequence[int], test: Sequence[int]
) -> FoldSplit:
    split = FoldSplit(
        fold=fold,
        train=np.sort(np.asarray(train, dtype=np.int64)),
        valid=np.sort(np.asarray(valid, dtype=np.int64)),
        test=np.sort(np.asarray(test, dtype=np.int64)),
    )
    # Cheap invariant check: a silent overlap here would leak test rows into training.
    seen = np.zeros(n, dtype=np.int64)
    for part in (split.train, split.valid, split.test):
        np.add.at(seen, part, 1)
    if not np.all(seen == 1):
        raise AssertionError(f"fold {fold}: train/valid/test do not partition {n} rows")
    return split


def random_kfold(
    n: int, n_folds: int = 5, seed: int = 0, valid_fraction: float = 0.5
) -> list[FoldSplit]:
    """CGIB-style k-fold: one seeded shuffle, k contiguous held-out chunks, each cut valid | test.

    CGIB shuffles once, takes ``int(n / k)`` rows per held-out chunk (the remainder always trains)
    and uses the first half of the chunk for validation. Here ``np.array_split`` spreads the
    remainder over the chunks instead, so that every row is tested exactly once across the folds.
    """
    _check_sizes(n, n_folds)
    if not 0.0 < valid_fraction < 1.0:
        raise UserError(f"valid_fraction must be in (0, 1) (got {valid_fraction})")
    order = np.random.default_rng(seed).permutation(n)
    chunks = np.array_split(order, n_folds)
    folds = []
    for fold, held in enumerate(chunks):
        n_valid = min(max(1, int(len(held) * valid_fraction)), len(held) - 1)
        train = np.concatenate([chunk for i, chunk in enumerate(chunks) if i != fold])
        folds.append(_fold_split(fold, n, train, held[:n_valid], held[n_valid:]))
    return folds


def group_kfold(
    groups: Sequence[str], n_folds: int = 5, seed: int | None = 0, valid_fraction: float = 0.5
) -> list[FoldSplit]:
    """k-fold where all rows of a group land in the same role of every fold.

    Groups are assigned greedily, largest first, to the fold holding the fewest rows so far (ties go
    to the lowest fold index), which keeps folds balanced even with a few very large groups.
    ``seed=None`` orders equal-sized groups by their label (fully deterministic, seed-free);
    otherwise a seeded shuffle breaks those ties, so that repeats can draw different folds.
    The held-out groups of a fold are then split the same way into validation and test; a fold that
    holds a single (oversized) group has that group cut in half by table order instead.
    """
    labels = np.asarray([str(g) for g in groups], dtype=object)
    n = len(labels)
    _check_sizes(n, n_folds)
    uniques, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(uniques) < 2 * n_folds:
        raise UserError(
            f"cannot make {n_folds} grouped folds from {len(uniques)} groups: each fold needs at "
            "least one validation and one test group; use fewer folds or the random split"
        )
    if seed is None:
        tiebreak = np.arange(len(uniques))  # np.unique sorted the labels already
    else:
        tiebreak = np.random.default_rng(seed).permutation(len(uniques))
    order = np.lexsort((tiebreak, -counts))  # size descending, then tiebreak
    fold_of_group = _greedy_assign(order, counts, n_folds)

    rows_of_group = [np.flatnonzero(inverse == g) for g in range(len(uniques))]
    folds = []
    for fold in range(n_folds):
        held_groups = [g for g in order if fold_of_group[g] == fold]
        if len(held_groups) == 1:
            # One group larger than a fold (benzene is 24 % of MNSol's solute scaffolds) fills the
            # fold alone. Train stays disjoint from it; validation and test share it, cut in table
            # order.
            rows = rows_of_group[held_groups[0]]
            if len(rows) < 2:
                raise UserError(
                    f"fold {fold} holds a single row; use fewer folds or a larger table"
                )
            n_valid = min(max(1, int(len(rows) * valid_fraction)), len(rows) - 1)
            valid, test = list(rows[:n_valid]), list(rows[n_valid:])
        else:
            # With >= 2 groups the greedy pass puts the first group in valid and the second in test.
            side = _greedy_assign(
                np.asarray(held_groups), counts, 2, weights=(valid_fraction, 1.0 - valid_fraction)
            )
            valid = [r for g in held_groups if side[g] == 0 for r in rows_of_group[g]]
            test = [r for g in held_groups if side[g] == 1 for r in rows_of_group[g]]
        train = [r for g in order if fold_of_group[g] != fold for r in rows_of_group[g]]
        folds.append(_fold_split(fold, n, train, valid, test))
    return folds


def _greedy_assign(
    order: np.ndarray, counts: np.ndarray, n_bins: int, weights: Sequence[float] | None = None
) -> np.ndarray:
    """Assign each group (in ``order``) to the bin with the smallest load / weight; returns the
    bin of each group."""
    weights_arr = np.ones(n_bins) if weights is None else np.asarray(weights, dtype=float)
    load = np.zeros(n_bins)
    assigned = np.full(len(counts), -1, dtype=np.int64)
    for g in order:
        b = int(np.argmin(load / weights_arr))
        assigned[g] = b
        load[b] += counts[g]
    return assigned


def _solute_keys(smiles: Sequence[str], key: Callable[[Chem.Mol], str]) -> list[str]:
    """``key`` of each solute's RDKit molecule, computed once per distinct SMILES; an
    unparsable SMILES is a UserError."""
    from rdkit import Chem

    cache: dict[str, str] = {}
    out = []
    for smi in smiles:
        if smi not in cache:
            mol = Chem.MolFromSmiles(smi)
            if mol is None:
                raise UserError(
                    f"solute SMILES {smi!r} does not parse with RDKit; "
                    "fix or drop it in the pair table"
                )
            cache[smi] = key(mol)
        out.append(cache[smi])
    return out


def canonical_smiles(smiles: Sequence[str]) -> list[str]:
    """RDKit canonical SMILES (computed once per distinct input); unparsable input is a
    UserError."""
    from rdkit import Chem

    return _solute_keys(smiles, Chem.MolToSmiles)


def murcko_scaffolds(smiles: Sequence[str]) -> list[str]:
    """Bemis–Murcko scaffold SMILES of each molecule.

    A molecule without rings has an empty scaffold; grouping all of those together would put a
    third of FreeSolv into one fold, so an acyclic molecule is its own group (keyed by its
    canonical SMILES, prefixed ``acyclic:``).
    """
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    def scaffold_key(mol: Chem.Mol) -> str:
        scaffold = MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
        return scaffold if scaffold else "acyclic:" + Chem.MolToSmiles(mol)

    return _solute_keys(smiles, scaffold_key)


def solute_split(solutes: Sequence[str], n_folds: int = 5, seed: int = 0) -> list[FoldSplit]:
    """Folds grouped by canonical solute: no solute is in both train and valid/test of a fold."""
    return group_kfold(canonical_smiles(solutes), n_folds=n_folds, seed=seed)


def scaffold_split(solutes: Sequence[str], n_folds: int = 5) -> list[FoldSplit]:
    """Folds grouped by the solute's Bemis–Murcko scaffold; deterministic (no seed): groups are
    placed largest first, ties by scaffold SMILES, each into the currently smallest fold."""
    return group_kfold(murcko_scaffolds(solutes), n_folds=n_folds, seed=None)


def make_splits(
    kind: str, solutes: Sequence[str], n_folds: int = 5, seed: int = 0
) -> list[FoldSplit]:
    """Dispatch on the split name used by the CLI (``random``, ``solute``, ``scaffold``)."""
    if kind == "random":
        return random_kfold(len(solutes), n_folds=n_folds, seed=seed)
    if kind == "solute":
        return solute_split(solutes, n_folds=n_folds, seed=seed)
    if kind == "scaffold":
        return scaffold_split(solutes, n_folds=n_folds)
    raise UserError(f"unknown split {kind!r}; choose one of {', '.join(SPLIT_KINDS)}")
