"""Predict a property from two SMILES, or for every row of a CSV, with a final model.

One pair (--solute, --solvent): prints the prediction with its unit, its uncertainty (the model's
σ calibrated on the holdout, the ensemble spread, or both) and whether it is an extrapolation
(elements or sizes not seen in training, a solute unlike every training solute); --json prints
the row as JSON instead. A file (--input): streams it in chunks into --out (.parquet or .csv), one
output row per input row in input order; a row whose SMILES cannot be used gets status
`rejected` and a reason, never a crash of the batch.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from pairfactory.errors import UserError

PARENTS = ("log", "progress")

EPILOG = """examples:
  pairfactory predict --model-dir results/models/freesolv/dg_hydration_kcal_mol/probpair_2d \\
      --solute CCO --solvent O
  pairfactory predict --model-dir results/models/freesolv/dg_hydration_kcal_mol/probpair_2d \\
      --input pairs.csv --solute-column solute --solvent-column solvent --out predictions.parquet
  # a semicolon-separated file, CSV out
  pairfactory predict --model-dir DIR --input pairs.csv --delimiter ';' \\
      --solute-column SMILES --solvent-column Solvent --out predictions.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--model-dir", type=Path, required=True, metavar="DIR", help="from `pairfactory train`"
    )
    parser.add_argument("--solute", metavar="SMILES", help="one pair: the solute")
    parser.add_argument("--solvent", metavar="SMILES", help="one pair: the solvent")
    parser.add_argument("--json", action="store_true", help="one pair: print the row as JSON")
    parser.add_argument("--input", type=Path, metavar="CSV", help="a file of pairs")
    parser.add_argument("--solute-column", default="solute_smiles", metavar="NAME")
    parser.add_argument("--solvent-column", default="solvent_smiles", metavar="NAME")
    parser.add_argument("--delimiter", default=None, help="field separator of --input (default ,)")
    parser.add_argument(
        "--out", type=Path, metavar="PATH", help="with --input: .parquet or .csv to write"
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=50_000,
        help="rows per chunk of --input (memory grows with it; default %(default)s)",
    )
    parser.add_argument(
        "--min-similarity",
        type=float,
        default=None,
        help="flag solutes whose nearest training solute has a lower Tanimoto similarity "
        "(default: the model's, 0.3)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))


def run(args: argparse.Namespace) -> int:
    single = args.solute is not None or args.solvent is not None
    if single == (args.input is not None):
        raise UserError("give either --solute and --solvent (one pair) or --input (a file)")
    if single and (args.solute is None or args.solvent is None):
        raise UserError("one pair needs both --solute and --solvent")
    if args.input is not None and args.out is None:
        raise UserError("--input needs --out (a .parquet or .csv file to write)")
    from pairfactory.ml.predictor import load_model

    model = load_model(
        args.model_dir,
        device=args.device,
        num_threads=args.threads,
        min_solute_similarity=args.min_similarity,
    )
    if single:
        started = time.perf_counter()
        row = model.predict([args.solute], [args.solvent]).iloc[0].to_dict()
        row["model_time_s"] = time.perf_counter() - started
        print(json.dumps(_jsonable(row)) if args.json else describe(row, model))
        return 0 if row["status"] == "ok" else 1
    counts = model.predict_file(
        args.input,
        args.out,
        args.solute_column,
        args.solvent_column,
        delimiter=args.delimiter,
        chunk_rows=args.chunk_rows,
        progress=not args.no_progress,
    )
    print(json.dumps({"out": str(args.out), **counts}))
    return 0


def describe(row: dict[str, Any], model: Any) -> str:
    """A prediction for a person: value, unit, σ and the applicability verdict."""
    if row["status"] != "ok":
        return f"no prediction: {row['reason']}"
    t, unit = model.target, model.unit
    parts = [f"{t} = {row[t]:.3f} {unit}"]
    if not math.isnan(row[f"{t}_sigma"]):
        parts.append(f"± {row[f'{t}_sigma']:.3f} (model σ, calibrated on the holdout)")
    if not math.isnan(row[f"{t}_ensemble_sigma"]):
        parts.append(
            f"± {row[f'{t}_ensemble_sigma']:.3f} (spread of {len(model.members)} ensemble members)"
        )
    if len(parts) == 1:
        parts.append("(no uncertainty: a single point-prediction model; train with --ensemble)")
    verdict = (
        f"EXTRAPOLATION: {row['applicability']}"
        if row["extrapolation"]
        else "inside the training domain"
    )
    return (
        "  ".join(parts)
        + f"\n{verdict} (nearest training solute Tanimoto {row['solute_similarity']:.2f})"
        + f"\nmodel {model.card.model}, {model.card.dataset}/{t}, model time "
        f"{row['model_time_s']:.3f} s"
    )


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if hasattr(value, "item"):
            value = value.item()
        out[key] = None if isinstance(value, float) and math.isnan(value) else value
    return out
