"""Split a dataset's QM systems × samples into stable shards.

A *system* is a unique (solute, solvent) pair of a dataset across all its targets; the QM work does
not depend on the target. Systems are ordered by the first raw-file row they appear in, so that
appending rows to a dataset appends systems, and shard ``s{block:05d}-k{sample_block:03d}`` holds
systems ``[block*P, (block+1)*P)`` × samples ``[sample_block*K, (sample_block+1)*K)``. Adding
systems therefore only creates shards (and changes at most the last partial block); raising the
sample count only creates sample blocks.

This module is imported by Snakemake at DAG time on ~20,000 systems: it must stay light
(pandas, pyarrow, hashlib; no RDKit) and fast.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pairfactory.errors import InputFileError, UserError

if TYPE_CHECKING:
    from pairfactory.qm.settings import QmSettings

log = logging.getLogger(__name__)

SYSTEM_COLUMNS: tuple[str, ...] = (
    "system_id",
    "dataset",
    "solute_smiles",
    "solvent_smiles",
    "first_source_row",
    "solid_state",
    "solute_heavy_atoms",
    "solvent_heavy_atoms",
    "n_targets",
)

_SHARD_ID_RE = re.compile(r"^s(\d{5})-k(\d{3})$")


@dataclass(frozen=True)
class ShardSpec:
    """One unit of optimize work: a block of systems × a block of sample indices."""

    shard_id: str
    system_ids: tuple[str, ...]
    sample_indices: tuple[int, ...]
    content_hash: str
    # The SMILES of each system, parallel to system_ids (part of the content hash).
    solute_smiles: tuple[str, ...] = ()
    solvent_smiles: tuple[str, ...] = ()

    @property
    def n_samples(self) -> int:
        return len(self.system_ids) * len(self.sample_indices)

    def expected_pairs(self) -> list[tuple[str, int]]:
        """Every (system_id, k) the shard must hold, in the order optimize runs them."""
        return [(sid, k) for sid in self.system_ids for k in self.sample_indices]


# ---------------------------------------------------------------------------------------------
# systems


def system_id_for(solute_smiles: str, solvent_smiles: str) -> str:
    """16 hex chars of sha256 over the two canonical SMILES (a tab cannot occur in SMILES)."""
    return hashlib.sha256(f"{solute_smiles}\t{solvent_smiles}".encode()).hexdigest()[:16]


# Atoms in a SMILES string: bracket atoms, then the two-letter organic-subset symbols before the
# one-letter ones so that "Cl" is not read as "C" + "l".
_SMILES_ATOM_RE = re.compile(r"\[([^\]]*)\]|Br|Cl|[BCNOPSFI]|[bcnops]|\*")
_BRACKET_ELEMENT_RE = re.compile(r"^\d*([A-Z][a-z]?|[a-z][a-z]?)")


def heavy_atom_count(smiles: str) -> int:
    """Count non-hydrogen atoms of a SMILES string without RDKit (plan time must stay fast).

    Bracket atoms count unless their element is H (``[H]``, ``[2H]``); implicit hydrogens never
    count. Ring-closure digits, bonds, charges outside brackets and ``.`` are not atoms. A
    wildcard ``*`` counts as one atom. Raises UserError for an unterminated bracket.
    """
    if smiles.count("[") != smiles.count("]"):
        raise UserError(f"SMILES {smiles!r} has unbalanced brackets; fix the pair table")
    count = 0
    for match in _SMILES_ATOM_RE.finditer(smiles):
        bracket = match.group(1)
        if bracket is None:
            count += 1
            continue
        element = _BRACKET_ELEMENT_RE.match(bracket)
        if element is None:
            raise UserError(f"SMILES {smiles!r} has a bracket atom [{bracket}] without an element")
        if element.group(1) not in ("H",):
            count += 1
    return count


_REQUIRED_PAIR_COLUMNS = ("dataset", "solute_smiles", "solvent_smiles", "source_row")


def systems_from_pair_tables(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Unique (solute, solvent) systems across a dataset's pair tables, ordered by first source row.

    The tables are the per-target pair tables of one dataset (columns of ``pairfactory.pairs``);
    ``solid_state`` is true if any of the pair's rows is flagged solid-state.
    """
    if not tables:
        raise UserError("no pair tables given: run 'pairfactory pairs' for the dataset first")
    frames = []
    for index, table in enumerate(tables):
        missing = [c for c in _REQUIRED_PAIR_COLUMNS if c not in table.columns]
        if missing:
            raise UserError(
                f"pair table #{index} lacks column(s) {missing}; "
                "regenerate it with 'pairfactory pairs'"
            )
        cols = list(_REQUIRED_PAIR_COLUMNS) + (
            ["solid_state"] if "solid_state" in table.columns else []
        )
        frame = table[cols].copy()
        if "solid_state" not in frame.columns:
            frame["solid_state"] = False
        frame["_target_table"] = index
        frames.append(frame)
    pairs = pd.concat(frames, ignore_index=True)
    if pairs.empty:
        return pd.DataFrame({c: pd.Series(dtype=_SYSTEM_DTYPES[c]) for c in SYSTEM_COLUMNS})
    datasets = pairs["dataset"].dropna().unique()
    if len(datasets) != 1:
        raise UserError(
            f"pair tables mix datasets {sorted(map(str, datasets))}; plan one dataset at a time"
        )
    null_smiles = pairs["solute_smiles"].isna() | pairs["solvent_smiles"].isna()
    if null_smiles.any():
        rows = pairs.loc[null_smiles, "source_row"].head(5).tolist()
        raise UserError(
            f"pair tables hold {int(null_smiles.sum())} rows without SMILES (source rows {rows})"
        )
    pairs["solid_state"] = pairs["solid_state"].fillna(False).astype(bool)

    grouped = pairs.groupby(["solute_smiles", "solvent_smiles"], sort=False, dropna=False)
    systems = grouped.agg(
        first_source_row=("source_row", "min"),
        solid_state=("solid_state", "any"),
        n_targets=("_target_table", "nunique"),
    ).reset_index()
    systems["dataset"] = str(datasets[0])
    systems["system_id"] = [
        system_id_for(a, b)
        for a, b in zip(systems["solute_smiles"], systems["solvent_smiles"], strict=True)
    ]
    counts: dict[str, int] = {}
    for smi in pd.unique(pd.concat([systems["solute_smiles"], systems["solvent_smiles"]])):
        counts[smi] = heavy_atom_count(smi)
    systems["solute_heavy_atoms"] = systems["solute_smiles"].map(counts).astype("int64")
    systems["solvent_heavy_atoms"] = systems["solvent_smiles"].map(counts).astype("int64")
    # Ties on first_source_row (two pairs from one raw row cannot happen, but be deterministic
    # anyway).
    systems = systems.sort_values(["first_source_row", "system_id"], kind="mergesort").reset_index(
        drop=True
    )
    systems["first_source_row"] = systems["first_source_row"].astype("int64")
    systems["n_targets"] = systems["n_targets"].astype("int64")
    return systems[list(SYSTEM_COLUMNS)]


_SYSTEM_DTYPES = {
    "system_id": "object",
    "dataset": "object",
    "solute_smiles": "object",
    "solvent_smiles": "object",
    "first_source_row": "int64",
    "solid_state": "bool",
    "solute_heavy_atoms": "int64",
    "solvent_heavy_atoms": "int64",
    "n_targets": "int64",
}


def select_systems(
    systems: pd.DataFrame,
    max_systems: int | None,
    max_heavy_atoms: int | None,
    include_solid_state: bool = True,
) -> pd.DataFrame:
    """The first ``max_systems`` systems (in order) whose solute + one solvent molecule have at
    most ``max_heavy_atoms`` heavy atoms. Stable when rows are appended to the dataset, because the
    order is by first source row and a filter decision depends on the system alone."""
    if max_systems is not None and max_systems < 0:
        raise UserError(f"qm.max_systems must be >= 0 or null, got {max_systems}")
    if max_heavy_atoms is not None and max_heavy_atoms < 1:
        raise UserError(f"qm.max_heavy_atoms must be >= 1 or null, got {max_heavy_atoms}")
    keep = pd.Series(True, index=systems.index)
    if max_heavy_atoms is not None:
        keep &= (systems["solute_heavy_atoms"] + systems["solvent_heavy_atoms"]) <= max_heavy_atoms
    if not include_solid_state:
        keep &= ~systems["solid_state"].astype(bool)
    selected = systems[keep]
    if max_systems is not None:
        selected = selected.head(max_systems)
    return selected.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# shards


def shard_id_for(block: int, sample_block: int) -> str:
    if not (0 <= block <= 99999 and 0 <= sample_block <= 999):
        raise UserError(
            f"shard block {block} / sample block {sample_block} out of range for the id format "
            "s{block:05d}-k{sample_block:03d}: raise shards.systems_per_shard or "
            "shards.samples_per_shard"
        )
    return f"s{block:05d}-k{sample_block:03d}"


def parse_shard_id(shard_id: str) -> tuple[int, int]:
    match = _SHARD_ID_RE.match(shard_id)
    if not match:
        raise UserError(f"shard id {shard_id!r} is not of the form s00012-k001")
    return int(match.group(1)), int(match.group(2))


def content_hash_for(
    system_ids: Iterable[str],
    solute_smiles: Iterable[str],
    solvent_smiles: Iterable[str],
    sample_indices: Iterable[int],
    sampling_key: str = "",
) -> str:
    digest = hashlib.sha256()
    if sampling_key:
        digest.update(f"sampling:{sampling_key}\n".encode())
    for sid, solute, solvent in zip(system_ids, solute_smiles, solvent_smiles, strict=True):
        digest.update(f"{sid}\t{solute}\t{solvent}\n".encode())
    digest.update(("k:" + ",".join(str(k) for k in sample_indices)).encode())
    return digest.hexdigest()[:16]


def plan_shards(
    systems: pd.DataFrame,
    samples_per_system: int,
    systems_per_shard: int,
    samples_per_shard: int,
    sampling_key: str = "",
) -> list[ShardSpec]:
    """Cut ``systems`` (already selected and ordered) × ``range(samples_per_system)`` into shards.

    ``sampling_key`` (``QmSettings.sampling_key``) enters every content hash: the same systems and
    indices sampled with other complex-building settings are other work.
    """
    for name, value in (
        ("samples.per_system", samples_per_system),
        ("shards.systems_per_shard", systems_per_shard),
        ("shards.samples_per_shard", samples_per_shard),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    if systems["system_id"].duplicated().any():
        dupes = systems.loc[systems["system_id"].duplicated(), "system_id"].head(3).tolist()
        raise UserError(
            f"duplicate system ids {dupes} in the systems table; "
            "build it with systems_from_pair_tables"
        )
    ids = systems["system_id"].tolist()
    solutes = systems["solute_smiles"].tolist()
    solvents = systems["solvent_smiles"].tolist()
    specs: list[ShardSpec] = []
    for block, start in enumerate(range(0, len(ids), systems_per_shard)):
        stop = start + systems_per_shard
        block_ids, block_solutes, block_solvents = (
            ids[start:stop],
            solutes[start:stop],
            solvents[start:stop],
        )
        for sample_block, k0 in enumerate(range(0, samples_per_system, samples_per_shard)):
            ks = tuple(range(k0, min(k0 + samples_per_shard, samples_per_system)))
            specs.append(
                ShardSpec(
                    shard_id=shard_id_for(block, sample_block),
                    system_ids=tuple(block_ids),
                    sample_indices=ks,
                    content_hash=content_hash_for(
                        block_ids, block_solutes, block_solvents, ks, sampling_key
                    ),
                    solute_smiles=tuple(block_solutes),
                    solvent_smiles=tuple(block_solvents),
                )
            )
    return specs


def plan_table(specs: Sequence[ShardSpec]) -> pd.DataFrame:
    """One row per shard (for ``--out`` and for the workflow's inspection)."""
    return pd.DataFrame(
        {
            "shard_id": [s.shard_id for s in specs],
            "n_systems": [len(s.system_ids) for s in specs],
            "first_k": [s.sample_indices[0] for s in specs],
            "n_k": [len(s.sample_indices) for s in specs],
            "n_samples": [s.n_samples for s in specs],
            "content_hash": [s.content_hash for s in specs],
            "system_ids": [list(s.system_ids) for s in specs],
        }
    )


# ---------------------------------------------------------------------------------------------
# reading pair tables


def pair_table_paths(pairs_dir: str | Path, dataset: str) -> list[Path]:
    """The pair tables of ``dataset`` whose rows are its systems: every target's
    ``{pairs_dir}/{dataset}/*.parquet``, not its rejects nor hidden files; sorted, possibly
    empty."""
    return sorted(
        p
        for p in (Path(pairs_dir) / dataset).glob("*.parquet")
        if p.name != "rejects.parquet" and not p.name.startswith(".")
    )


def load_systems(pairs_dir: str | Path, dataset: str) -> pd.DataFrame:
    """Systems of ``dataset`` from its pair tables (``pair_table_paths``)."""
    folder = Path(pairs_dir) / dataset
    if not folder.is_dir():
        raise UserError(
            f"no pair tables for dataset {dataset!r}: folder {folder} does not exist "
            "(run 'pairfactory pairs' first, or check --pairs-dir / --dataset)"
        )
    paths = pair_table_paths(pairs_dir, dataset)
    if not paths:
        raise UserError(f"{folder} holds no pair tables (*.parquet other than rejects.parquet)")
    import pyarrow.parquet as pq

    tables = []
    for path in paths:
        try:
            # Only the columns a system needs: the plan runs at DAG time on every workflow start.
            names = pq.read_schema(path).names
            wanted = [c for c in (*_REQUIRED_PAIR_COLUMNS, "solid_state") if c in names]
            tables.append(pd.read_parquet(path, columns=wanted))
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise InputFileError(
                path, f"cannot be read as Parquet ({err}); regenerate it with 'pairfactory pairs'"
            ) from err
    return systems_from_pair_tables(tables)


def selected_systems(settings: QmSettings, pairs_dir: str | Path, dataset: str) -> pd.DataFrame:
    """The systems of ``dataset`` that get QM samples (``qm.datasets.{dataset}``), in plan order."""
    subset = settings.subset(dataset)
    systems = load_systems(pairs_dir, dataset)
    # Solid-state rows are excluded (or kept, flagged) by the pairs stage
    # (pairs.exclude_solid_state), so every remaining system is planned.
    return select_systems(systems, subset.max_systems, subset.max_heavy_atoms)


def plan_for_dataset(
    settings: QmSettings, pairs_dir: str | Path, dataset: str
) -> tuple[pd.DataFrame, list[ShardSpec]]:
    """The selected systems of ``dataset`` and their shard plan, as the workflow and stages see
    them."""
    systems = selected_systems(settings, pairs_dir, dataset)
    specs = plan_shards(
        systems,
        settings.samples_per_system,
        settings.systems_per_shard,
        settings.samples_per_shard,
        settings.sampling_key,
    )
    return systems, specs


def find_shard(specs: Sequence[ShardSpec], shard_id: str) -> ShardSpec:
    parse_shard_id(shard_id)
    for spec in specs:
        if spec.shard_id == shard_id:
            return spec
    if specs:
        raise UserError(
            f"shard {shard_id} is not in the plan ({len(specs)} shards, "
            f"{specs[0].shard_id} … {specs[-1].shard_id}); "
            "the pair tables or the qm/samples/shards config changed since the workflow was planned"
        )
    raise UserError(f"shard {shard_id} is not in the plan: the plan is empty (no systems selected)")
