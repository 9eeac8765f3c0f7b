"""Featurize pair tables into cached DGL graphs (each unique SMILES once).

Extends the graph cache (--cache) with every solute and solvent SMILES of the pair tables, and
lists the SMILES that cannot be featurized (--rejects). `pairfactory evaluate` reads the same
cache, so featurizing first only moves that work out of the training jobs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARENTS = ("log", "progress")

EPILOG = """example:
  pairfactory featurize --pairs results/pairs/freesolv/dg_hydration_kcal_mol.parquet \\
      --cache results/graphs/graph_cache.pt --rejects results/graphs/freesolv_rejects.parquet
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--pairs",
        type=Path,
        nargs="+",
        required=True,
        metavar="PATH",
        help="pair table(s) (Parquet)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        required=True,
        metavar="PATH",
        help="graph cache file to create or extend",
    )
    parser.add_argument(
        "--rejects",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the SMILES that could not be featurized here (Parquet: smiles, reason, table)",
    )


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    import pyarrow.parquet as pq

    from pairfactory.errors import InputFileError
    from pairfactory.fileio import atomic_write
    from pairfactory.ml.datasets import SOLUTE_COLUMN, SOLVENT_COLUMN
    from pairfactory.ml.featurize import ATOM_FEATURE_DIM, BOND_FEATURE_DIM, FEATURE_SPEC_HASH
    from pairfactory.ml.graph_cache import GraphCache

    # Check every table before featurizing anything, so a typo fails in a second.
    for table in args.pairs:
        if not table.is_file():
            raise InputFileError(table, "no such pair table; run `pairfactory pairs` first")
        try:
            columns = set(pq.read_schema(table).names)
        except Exception as err:
            raise InputFileError(table, f"not a Parquet file ({err})") from err
        if not {SOLUTE_COLUMN, SOLVENT_COLUMN} <= columns:
            raise InputFileError(
                table,
                f"not a pair table: no {SOLUTE_COLUMN}/{SOLVENT_COLUMN} columns "
                f"(has {sorted(columns)})",
            )

    cache = GraphCache(args.cache)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for table in args.pairs:
        df = pd.read_parquet(table, columns=[SOLUTE_COLUMN, SOLVENT_COLUMN])
        smiles = [
            s
            for s in dict.fromkeys(df[SOLUTE_COLUMN].tolist() + df[SOLVENT_COLUMN].tolist())
            if s not in seen
        ]
        seen.update(smiles)
        failed = cache.featurize_all(
            smiles, desc=f"featurize {table.name}", progress=not args.no_progress
        )
        rows += [{"smiles": s, "reason": r, "table": str(table)} for s, r in failed.items()]
    cache.save()
    if args.rejects is not None:
        rejects = pd.DataFrame(rows, columns=["smiles", "reason", "table"])
        atomic_write(args.rejects, lambda tmp: rejects.to_parquet(tmp, index=False))
    print(
        f"{len(seen)} unique SMILES in {len(args.pairs)} table(s): "
        f"{len(seen) - len(rows)} featurized, {len(rows)} failed; "
        f"cache {args.cache} holds {len(cache)} graphs "
        f"(features: {ATOM_FEATURE_DIM} per atom, {BOND_FEATURE_DIM} per bond, "
        f"spec {FEATURE_SPEC_HASH})"
    )
    return 0
