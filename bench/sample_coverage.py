"""Coverage of pair tables by a folder of QM samples (prints a table).

For each table: pairs, pairs with at least one kept sample, and the sample counts of
``pairfactory.ml.sample_sets`` (ok, failed, QC-flagged, atom-correspondence mismatches, kept).
A table whose systems were sampled under several datasets (CombiSolv-Exp's pairs are partly
MNSol's and FreeSolv's systems) names them joined by "+": a pair is covered when any of them holds
a kept sample of it, and the sample counts add up over them.

example:
  .venv/bin/python bench/sample_coverage.py --shards-root ../shared/qm/shards \\
      --engine-tag xtb-5bc9618c --table freesolv/dg_hydration_kcal_mol=freesolv \\
      freesolv_cgib/dg_hydration_kcal_mol=freesolv mnsol/dg_solv_kcal_mol=mnsol \\
      combisolv/dg_solv_kcal_mol=mnsol+freesolv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pairfactory.ml.graph_cache import GraphCache
from pairfactory.ml.sample_sets import SampleSetTable, build_sample_sets


def _union_summary(tables: list[SampleSetTable]) -> dict[str, int]:
    """The summary of one pair table covered by several shard folders: a pair is covered when any
    folder holds a kept sample of it; the sample counts (distinct samples) add up."""
    summaries = [table.summary() for table in tables]
    union = {name: sum(summary[name] for summary in summaries) for name in summaries[0]}
    covered = np.logical_or.reduce([table.coverage["covered"].to_numpy() for table in tables])
    union["pairs"] = summaries[0]["pairs"]
    union["covered_pairs"] = int(covered.sum())
    return union


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs-dir", default="results/pairs")
    parser.add_argument("--shards-root", required=True, help="laid out like results/shards")
    parser.add_argument("--engine-tag", required=True)
    parser.add_argument(
        "--table",
        nargs="+",
        required=True,
        metavar="DATASET/TARGET=SHARDS_DATASET",
        help="a pair table and the dataset folder its samples are under (several joined by +)",
    )
    args = parser.parse_args(argv)
    cache = GraphCache(None)
    rows = []
    for item in args.table:
        table, _, source = item.partition("=")
        pairs = pd.read_parquet(Path(args.pairs_dir) / f"{table}.parquet")
        started = time.perf_counter()
        sources = (source or table.split("/")[0]).split("+")
        summary = _union_summary(
            [
                build_sample_sets(pairs, Path(args.shards_root) / name / args.engine_tag, cache)
                for name in sources
            ]
        )
        rows.append(
            {
                "table": table,
                "samples_from": "+".join(sources),
                **summary,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
