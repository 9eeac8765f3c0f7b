"""Results tables and plots from evaluation outputs (results/evaluate -> results/report).

Reads every metrics.json under --results (the layout of `pairfactory evaluate`) and writes
results.csv, results.md, ablation.csv, plots/ (parity, learning-curve and calibration PNGs) and
report.html into --out-dir. report.html is one self-contained page that opens offline, with
interactive 3D views of a few noisy complexes of every shard folder given with --shards.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARENTS = ("log",)

EPILOG = """examples:
  pairfactory report --results results/evaluate --out-dir results/report
  pairfactory report --results results/evaluate --out-dir results/report --no-plots
  pairfactory report --results results/evaluate --out-dir results/report \\
      --shards results/shards/freesolv/xtb-1a2b3c4d
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
    parser.add_argument("--no-html", action="store_true", help="no report.html")
    parser.add_argument(
        "--shards",
        nargs="+",
        default=[],
        metavar="DIR",
        help="shard folders (results/shards/<dataset>/<engine tag>) whose complexes report.html "
        "shows in 3D",
    )


def run(args: argparse.Namespace) -> int:
    from pairfactory.ml.report import write_report

    written = write_report(
        args.results,
        args.out_dir,
        plots=not args.no_plots,
        html=not args.no_html,
        shards_dirs=args.shards,
    )
    print(
        f"wrote {written['markdown']}, {written['csv']}"
        + (f", {written['html']}" if written["html"] else "")
        + " "
        f"({written['n_folds']} folds, {len(written['plots'])} plots)"
    )
    return 0
