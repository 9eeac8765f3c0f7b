"""Results tables and plots from evaluation outputs (results/evaluate -> results/report).

Reads every metrics.json under --results (the layout of `pairfactory evaluate`) and writes
results.csv, results.md and plots/ (parity and learning-curve PNGs) into --out-dir.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARENTS = ("log",)

EPILOG = """examples:
  pairfactory report --results results/evaluate --out-dir results/report
  pairfactory report --results results/evaluate --out-dir results/report --no-plots
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--results",
        default="results/evaluate",
        metavar="DIR",
        help="folder written by `pairfactory evaluate` (default: %(default)s)",
    )
    parser.add_argument(
        "--out-dir",
        "--out",  # the old name, still accepted
        dest="out_dir",
        type=Path,
        default=Path("results/report"),
        metavar="DIR",
        help="output folder: results.md, results.csv, plots/ (default: %(default)s; "
        "--out is the old name of this flag)",
    )
    parser.add_argument("--no-plots", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from pairfactory.ml.report import write_report

    written = write_report(args.results, args.out_dir, plots=not args.no_plots)
    print(
        f"wrote {written['markdown']} and {written['csv']} "
        f"({written['n_folds']} folds, {len(written['plots'])} plots)"
    )
    return 0
