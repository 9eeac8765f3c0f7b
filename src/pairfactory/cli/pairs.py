"""Curate raw datasets into solute–solvent pair tables (Parquet), rejects and summaries.

Writes {out-dir}/{dataset}/{target}.parquet, rejects.parquet, summary.json and summary.md for each
dataset, and prints the per-dataset summary table. Without --dataset, every dataset whose input file
is available is curated (Chromophore and FreeSolv are bundled; MNSol and CombiSolv need a path).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pairfactory.errors import UserError

log = logging.getLogger(__name__)

PARENTS = ("config", "log")

EPILOG = """examples:
  pairfactory pairs --data-dir ../shared/data --out-dir results/pairs
  pairfactory pairs --dataset mnsol --mnsol-csv ~/data/mnsol.csv
  pairfactory pairs --dataset chromophore --exclude-solid-state --out-dir results/pairs_no_solid
  # your own CSV, described under csv_datasets in config.yaml (see docs/architecture.md §1)
  pairfactory pairs --config config.yaml --dataset my_dyes
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pairfactory.pairs.registry import DATASETS

    parser.epilog = EPILOG
    parser.add_argument(
        "--dataset",
        action="extend",
        nargs="+",
        metavar="NAME",
        help=f"dataset(s) to curate: {', '.join(DATASETS)}, or a name under csv_datasets in "
        "--config (repeatable; default: all with input files)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="folder laid out like ../shared/data (chromophore/, freesolv/, mnsol/, "
        "combisolv_exp/): "
        "default for every input path below",
    )
    parser.add_argument(
        "--chromophore-csv",
        type=Path,
        metavar="PATH",
        help="Chromophore DB_for_chromophore_Sci_Data_rev02.csv",
    )
    parser.add_argument("--freesolv-txt", type=Path, metavar="PATH", help="FreeSolv database.txt")
    parser.add_argument(
        "--mnsol-csv",
        type=Path,
        metavar="PATH",
        help="MNSol mnsol.csv (semicolon-separated, with SMILES)",
    )
    parser.add_argument(
        "--combisolv-csv",
        type=Path,
        metavar="PATH",
        help="CombiSolv-Exp-8780.csv (for combisolv and freesolv_cgib)",
    )
    parser.add_argument(
        "--mnsol-overrides",
        type=Path,
        metavar="PATH",
        help="MNSol override table (default: the bundled YAML)",
    )
    parser.add_argument(
        "--exclude-solid-state",
        action="store_true",
        help="reject Chromophore solid-state/film rows (solvent == chromophore) "
        "instead of flagging them",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        default=Path("results/pairs"),
        help="output folder (default: %(default)s)",
    )


def _explicit_path(args: argparse.Namespace, input_key: str) -> Path | None:
    return getattr(args, input_key, None)


def run(args: argparse.Namespace) -> int:
    from pairfactory.cli import load_config_arg
    from pairfactory.pairs import curate, write_curated
    from pairfactory.pairs.csv_dataset import csv_sources, curate_csv
    from pairfactory.pairs.registry import DATASETS, default_input_path
    from pairfactory.pairs.writer import SUMMARY_HEADER, summary_table_rows

    sources = csv_sources(load_config_arg(args)) if args.config is not None else {}
    requested = list(dict.fromkeys(args.dataset or []))
    unknown = [name for name in requested if name not in DATASETS and name not in sources]
    if unknown:
        raise UserError(
            f"unknown dataset(s) {unknown}: choose from {', '.join(DATASETS)}"
            + (f", {', '.join(sources)}" if sources else "")
            + " (your own CSV: describe it under csv_datasets in a config and pass --config)"
        )
    if requested:
        datasets = requested
    else:
        datasets = list(sources)
        for name, spec in DATASETS.items():
            path = _explicit_path(args, spec.input_key) or default_input_path(name, args.data_dir)
            if path is not None and path.is_file():
                datasets.append(name)
            else:
                log.info("skipping %s: no input file (set %s or --data-dir)", name, spec.cli_flag)
        if not datasets:
            raise UserError(
                "no dataset input file found; pass --data-dir DIR or one of the input flags"
            )
    rows: list[list[str]] = []
    for name in datasets:
        if name in sources:
            curated = curate_csv(sources[name])
            written = write_curated(curated, args.out_dir)
            log.info("%s: wrote %s", name, ", ".join(str(p) for p in written))
            rows += summary_table_rows(curated.summary)
            continue
        spec = DATASETS[name]
        curated = curate(
            name,
            _explicit_path(args, spec.input_key),
            data_dir=args.data_dir,
            exclude_solid_state=args.exclude_solid_state and name == "chromophore",
            overrides_path=args.mnsol_overrides if name == "mnsol" else None,
        )
        written = write_curated(curated, args.out_dir)
        log.info("%s: wrote %s", name, ", ".join(str(p) for p in written))
        rows += summary_table_rows(curated.summary)
    print(_format_table(SUMMARY_HEADER, rows))
    print(
        f"\nwritten under {args.out_dir}/<dataset>/ "
        "(pair tables, rejects.parquet, summary.json, summary.md)"
    )
    return 0


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
