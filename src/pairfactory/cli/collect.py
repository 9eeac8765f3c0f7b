"""Validate every shard of a dataset/engine against the plan, reconcile counts, write a manifest.

Every shard the plan expects must exist and be valid (schema, counts, each (system, k) exactly
once, the configured engine tag, seed and sampling settings); then --out-dir gets
manifest.parquet (one row per shard, with its sha256), summary.json and summary.md (failures by
status and message class, per-system interaction-energy statistics). A missing or invalid shard
is an error naming it, and nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARENTS = ("config", "log", "progress", "pairs_dir")

EPILOG = """example:
  pairfactory collect --config config.yaml --dataset freesolv --pairs-dir results/pairs \\
      --shards-dir results/shards/freesolv/xtb-1a2b3c4d \\
      --out-dir results/manifest/freesolv/xtb-1a2b3c4d
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--dataset", required=True, metavar="NAME", help="dataset name, e.g. freesolv"
    )
    parser.add_argument(
        "--shards-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="the shards of one dataset and engine: results/shards/{dataset}/{engine_tag}",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="where manifest.parquet, summary.json and summary.md go",
    )


def run(args: argparse.Namespace) -> int:
    from pairfactory.cli import load_config_arg
    from pairfactory.qm.collect import MANIFEST_NAME, collect
    from pairfactory.qm.settings import QmSettings

    settings = QmSettings.from_config(load_config_arg(args))
    result = collect(
        settings,
        args.dataset,
        args.pairs_dir,
        args.shards_dir,
        args.out_dir,
        progress=not args.no_progress,
    )
    print(
        f"{result.dataset} ({result.engine_tag}): {result.n_shards} shards, "
        f"{result.n_samples} samples ({result.n_systems} systems), {result.ok} ok, "
        f"{result.failed} failed {result.by_status}; wrote {result.out_dir}/{MANIFEST_NAME}"
    )
    return 0
