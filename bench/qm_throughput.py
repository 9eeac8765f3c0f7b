"""Throughput of the optimize stage (a benchmark, not a test): samples per core-hour, seconds per
sample, and how much of the process CPU time is spent inside the engine's optimize call.

It runs ``pairfactory.qm.optimize.run_shard`` on a fixed set of 8 small real solute–water pairs
(FreeSolv/MNSol-like, given as SMILES below, or the first systems of ``--pairs-dir``/``--dataset``)
for shard sizes 8 (8 systems × 1 sample) and 64 (8 × 8), each with a cold parts cache, and prints a
Markdown table. Samples per core-hour use wall time × threads (what a job allocation pays);
samples per CPU-hour use the process CPU time (what the work costs, robust to a busy machine).
The engine fraction is process CPU time inside ``Engine.optimize`` (samples and isolated parts)
over process CPU time of the whole ``run_shard`` call (sampling, bookkeeping, Parquet write
included); the target is ≥ 95 % at shard size ≥ 64.

example:
  .venv/bin/python bench/qm_throughput.py --threads 1
  .venv/bin/python bench/qm_throughput.py --quick
  .venv/bin/python bench/qm_throughput.py --pairs-dir results/pairs --dataset freesolv --sizes 8 64
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Before numpy/tblite load: their thread pools are sized from these at import time.
_threads_arg = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "1")
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = _threads_arg
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `pairfactory optimize` does

import pandas as pd  # noqa: E402

# Small neutral solutes of FreeSolv (all in FreeSolv v0.52), solvent water; 2–7 heavy atoms.
DEFAULT_SOLUTES = [
    "CO",  # methanol
    "CCO",  # ethanol
    "CC(C)=O",  # acetone
    "CC#N",  # acetonitrile
    "CC(=O)O",  # acetic acid
    "ClC(Cl)Cl",  # chloroform
    "c1ccccc1",  # benzene
    "Oc1ccccc1",  # phenol
]


def systems_table(args: argparse.Namespace) -> pd.DataFrame:
    from pairfactory.qm.plan import load_systems, select_systems, systems_from_pair_tables

    if args.pairs_dir:
        systems = load_systems(args.pairs_dir, args.dataset)
        return select_systems(systems, args.systems, args.max_heavy_atoms)
    table = pd.DataFrame(
        {
            "dataset": "bench",
            "solute_smiles": DEFAULT_SOLUTES[: args.systems],
            "solvent_smiles": "O",
            "source_row": range(min(args.systems, len(DEFAULT_SOLUTES))),
            "solid_state": False,
        }
    )
    return systems_from_pair_tables([table])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("example:") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="shard sizes in samples, each a multiple of the system count (default 8 64)",
    )
    parser.add_argument("--systems", type=int, default=8, help="systems per shard (default 8)")
    parser.add_argument("--quick", action="store_true", help="4 systems, sizes 4 and 16 (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pairs-dir", default=None, help="take the systems from these pair tables instead"
    )
    parser.add_argument(
        "--dataset", default="freesolv", help="dataset under --pairs-dir (default freesolv)"
    )
    parser.add_argument(
        "--max-heavy-atoms",
        type=int,
        default=10,
        help="filter for --pairs-dir systems (default 10)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.systems = 4
        args.sizes = args.sizes or [4, 16]
    sizes = args.sizes or [8, 64]
    logging.basicConfig(level=logging.WARNING)

    from pairfactory.qm.optimize import run_shard
    from pairfactory.qm.plan import plan_shards
    from pairfactory.qm.samples import embed_molecule
    from pairfactory.qm.settings import QmSettings

    systems = systems_table(args)
    n_systems = len(systems)
    for size in sizes:
        if size % n_systems:
            parser.error(f"shard size {size} is not a multiple of the {n_systems} systems")
    settings = QmSettings.from_config({"seed": args.seed, "engine": {"name": "xtb"}})
    engine = settings.build_engine(args.threads)
    # Warm-up outside the measurement: loading tblite and its parameters is a one-off per process.
    engine.optimize(*embed_molecule("O", 0))

    rows = []
    with tempfile.TemporaryDirectory(prefix="qm-throughput-") as tmp:
        for size in sizes:
            per_system = size // n_systems
            spec = plan_shards(systems, per_system, n_systems, per_system)[0]
            cpu0, wall0 = time.process_time(), time.monotonic()
            summary = run_shard(
                spec,
                systems,
                settings,
                Path(tmp) / f"size{size}" / "s.parquet",
                args.threads,
                parts_cache=Path(tmp) / f"parts{size}",
                engine=engine,
                progress=False,
            )
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            times = sorted(summary.sample_wall_times_s)
            rows.append(
                {
                    "shard size": size,
                    "systems × samples": f"{n_systems} × {per_system}",
                    "wall s": f"{wall:.1f}",
                    "samples / core-hour": (
                        f"{summary.n_samples / (wall * args.threads / 3600):.0f}"
                    ),
                    # from process CPU time: unaffected by other processes on a shared machine
                    "samples / CPU-hour": f"{summary.n_samples / (cpu / 3600):.0f}",
                    "median s / sample": f"{statistics.median(times):.2f}",
                    "p90 s / sample": f"{times[int(0.9 * (len(times) - 1))]:.2f}",
                    "CPU in engine": f"{100 * summary.engine_cpu_s / cpu:.1f} %",
                    "ok / failed": f"{summary.ok} / {summary.failed}",
                    "parts computed": summary.parts_computed,
                }
            )
    print(
        f"\nGFN2-xTB (tblite, engine defaults), {args.threads} thread(s), seed {args.seed}, "
        f"solvent water, {n_systems} systems: {', '.join(systems.solute_smiles)}\n"
    )
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
