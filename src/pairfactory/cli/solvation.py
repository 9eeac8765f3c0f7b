"""Implicit-solvent ΔG_solv (GFN2-xTB/ALPB, the xtb program) of every system of a dataset (or of
those in the solvents of --solvent).

Writes one Parquet row per system (system_id, solute and solvent SMILES, ALPB solvent name, status,
dg_solv_alpb_kcal_mol and its four terms dg_{elec,sasa,hbond,shift}_alpb_kcal_mol, message, xtb
version, geometry hash, engine tag): the descriptor table that
`pairfactory evaluate --descriptors` reads as auxiliary targets of the training pairs (and as an
input of every pair for probpair with alpb_input: true). Solvents
xtb has no parameters for get a missing value (status unparametrized), not an error. Needs the
xtb program: `apt-get install xtb` (Debian/Ubuntu) or `conda install -c conda-forge xtb`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pairfactory.cli import load_config_arg
from pairfactory.cli.optimize import DEFAULT_PARTS_CACHE
from pairfactory.qm.solvation import DEFAULT_SOLVATION_CACHE

PARENTS = ("config", "log", "progress", "pairs_dir")

EPILOG = """example:
  pairfactory solvation --config config.yaml --dataset freesolv \\
      --out results/descriptors/freesolv/xtb-1a2b3c4d/alpb.parquet
  # a dataset whose water pairs are extra training pairs of another:
  pairfactory solvation --config config.yaml --dataset combisolv --solvent O \\
      --out results/descriptors/combisolv/xtb-1a2b3c4d/alpb.parquet
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. freesolv")
    parser.add_argument("--out", required=True, type=Path, help="descriptor table (.parquet)")
    parser.add_argument(
        "--parts-cache",
        default=DEFAULT_PARTS_CACHE,
        help="isolated-molecule cache of the optimize stage (default: %(default)s)",
    )
    parser.add_argument(
        "--solvation-cache",
        default=DEFAULT_SOLVATION_CACHE,
        help="ΔG_solv cache, one folder per engine tag (default: %(default)s)",
    )
    parser.add_argument(
        "--solvent",
        dest="solvents",
        action="append",
        default=[],
        metavar="SMILES",
        help="only the systems in this solvent (compared as molecules; repeatable), e.g. O for a "
        "dataset read only for its extra water pairs; the table records the choice "
        "(default: every system)",
    )
    parser.add_argument("--xtb", default=None, help="the xtb program (default: xtb on PATH)")
    parser.add_argument("--threads", type=int, default=1, help="engine threads for missing parts")


def run(args: argparse.Namespace) -> int:
    from pairfactory.qm.descriptors import solvation_descriptors, write_descriptors
    from pairfactory.qm.settings import QmSettings

    settings = QmSettings.from_config(load_config_arg(args))
    table = solvation_descriptors(
        settings,
        args.pairs_dir,
        args.dataset,
        args.parts_cache,
        args.solvation_cache,
        threads=args.threads,
        xtb_binary=args.xtb,
        progress=not args.no_progress,
        solvents=args.solvents,
    )
    out = write_descriptors(table, args.out)
    counts = table["status"].value_counts().to_dict()
    which = f" in solvent(s) {', '.join(args.solvents)}" if args.solvents else ""
    print(f"{args.dataset}: {len(table)} systems{which}, by status {counts}; wrote {out}")
    return 0
