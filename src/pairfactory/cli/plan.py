"""Split a dataset's QM systems × samples into stable shards; print the plan or write it.

A system is a unique (solute, solvent) pair of the dataset's pair tables; the systems selected by
qm.datasets.{dataset} × samples.per_system sample indices are cut into shards of
shards.systems_per_shard systems × shards.samples_per_shard indices (docs/shards.md). The workflow
plans the same way at DAG time; this command shows what it will schedule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARENTS = ("config", "log", "pairs_dir")

EPILOG = """example:
  pairfactory plan --config config.yaml --dataset freesolv --pairs-dir results/pairs \\
      --out plan.parquet
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--dataset", required=True, metavar="NAME", help="dataset name, e.g. freesolv"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the plan (one row per shard) to this Parquet file",
    )


def run(args: argparse.Namespace) -> int:
    from pairfactory.cli import load_config_arg
    from pairfactory.fileio import atomic_write
    from pairfactory.qm.plan import plan_for_dataset, plan_table
    from pairfactory.qm.settings import QmSettings

    settings = QmSettings.from_config(load_config_arg(args))
    systems, specs = plan_for_dataset(settings, args.pairs_dir, args.dataset)
    n_samples = sum(s.n_samples for s in specs)
    print(
        f"{args.dataset}: {len(systems)} systems selected, {n_samples} samples in "
        f"{len(specs)} shards"
    )
    if args.out:
        table = plan_table(specs)
        atomic_write(args.out, lambda tmp: table.to_parquet(tmp, index=False))
        print(f"wrote {args.out}")
    return 0
