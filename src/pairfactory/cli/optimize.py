"""Optimize every sample of one shard with the configured QM engine and write the shard file.

For each (system, k) of the shard: the seeded random complex is optimized under a per-sample
wall-clock budget and retried from a fresh arrangement on failure (engine.max_attempts); the
isolated solute and solvent come from the parts cache (--parts-cache), computed once per molecule
and engine settings. A valid existing output (same plan content, engine tag, seed and sampling
settings) is left alone; an interrupted shard resumes from its checkpoint. docs/shards.md
describes the columns.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

PARENTS = ("config", "log", "progress", "pairs_dir")

DEFAULT_PARTS_CACHE = Path("results/parts")

EPILOG = """example:
  pairfactory optimize --config config.yaml --dataset freesolv --pairs-dir results/pairs \\
      --shard s00000-k000 --out results/shards/freesolv/xtb-1a2b3c4d/s00000-k000.parquet \\
      --threads 1 --log results/logs/optimize/freesolv/s00000-k000.log
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--dataset", required=True, metavar="NAME", help="dataset name, e.g. freesolv"
    )
    parser.add_argument(
        "--shard", required=True, metavar="ID", help="shard id from the plan, e.g. s00000-k000"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="PATH",
        help="output shard file (.parquet), written atomically",
    )
    parser.add_argument(
        "--parts-cache",
        type=Path,
        default=DEFAULT_PARTS_CACHE,
        metavar="DIR",
        help="folder of cached isolated-molecule results (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="engine threads (default: SLURM_CPUS_PER_TASK, else the cores this process may use)",
    )


def run(args: argparse.Namespace) -> int:
    import signal

    from pairfactory.qm.threads import configure_threads, default_threads

    # Before anything imports tblite or numpy's BLAS (so nothing above does): their thread pools
    # are sized at load time.
    threads = default_threads() if args.threads is None else args.threads
    configure_threads(threads)
    # SLURM and Snakemake stop a job with SIGTERM: turn it into an exception so run_shard saves
    # the finished samples before the process ends.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    from pairfactory.cli import load_config_arg
    from pairfactory.qm.optimize import run_shard
    from pairfactory.qm.plan import find_shard, plan_for_dataset
    from pairfactory.qm.settings import QmSettings

    settings = QmSettings.from_config(load_config_arg(args))
    systems, specs = plan_for_dataset(settings, args.pairs_dir, args.dataset)
    spec = find_shard(specs, args.shard)
    summary = run_shard(
        spec,
        systems,
        settings,
        args.out,
        threads,
        parts_cache=args.parts_cache,
        progress=not args.no_progress,
    )
    if not summary.up_to_date:
        print(
            f"{summary.shard_id}: {summary.n_samples} samples, {summary.ok} ok, "
            f"by status {summary.by_status}; wrote {summary.out_path}"
        )
    return 0


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
