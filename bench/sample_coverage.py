"""Coverage of pair tables by a folder of QM samples (prints a table).

For each table: pairs, pairs with at least one kept sample, and the sample counts of
``pairfactory.ml.sample_sets`` (ok, failed, QC-flagged, atom-correspondence mismatches, kept).

example:
  .venv/bin/python bench/sample_coverage.py --shards-root ../shared/qm/shards \\
      --engine-tag xtb-5bc9618c --table freesolv/dg_hydration_kcal_mol=freesolv \\
      freesolv_cgib/dg_hydration_kcal_mol=freesolv mnsol/dg_solv_kcal_mol=mnsol
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from pairfactory.ml.graph_cache import GraphCache
from pairfactory.ml.sample_sets import build_sample_sets


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
        help="a pair table and the dataset folder its samples are under",
    )
    args = parser.parse_args(argv)
    cache = GraphCache(None)
    rows = []
    for item in args.table:
        table, _, source = item.partition("=")
        pairs = pd.read_parquet(Path(args.pairs_dir) / f"{table}.parquet")
        started = time.perf_counter()
        shards = Path(args.shards_root) / (source or table.split("/")[0]) / args.engine_tag
        summary = build_sample_sets(pairs, shards, cache).summary()
        rows.append({"table": table, **summary, "seconds": round(time.perf_counter() - started, 1)})
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
