"""Predict a property from two SMILES, or for every row of a CSV, with a final model.

One pair (--solute, --solvent): prints the prediction with its unit, its uncertainty (σ: the
members' own σ and their spread together, calibrated on the holdout; the members' spread alone
beside it) and whether it is an extrapolation
(elements or sizes not seen in training, a solute unlike every training solute); --json prints
the row as JSON instead. A file (--input): streams it in chunks into --out (.parquet or .csv), one
output row per input row in input order; a row whose SMILES cannot be used gets status
`rejected` and a reason, never a crash of the batch.

A model that reads ALPB ΔG_solv as an input (trained with alpb_input: true) gets it computed here
for every distinct (solute, solvent), exactly as its training table was: the solute optimized with
the QM engine its card records (cached in --parts-cache), then one GFN2-xTB/ALPB single point with
the xtb program (cached in --solvation-cache). That needs the xtb program (`apt-get install xtb`
or `conda install -c conda-forge xtb`) and costs about 1.5 s per new solute with the default xtb
engine (a DFT engine: its own optimization time); the output gets the value and, where there is
none (a solvent xtb has no parameters for, a failed run), why. --config, if given, supplies the
engine settings that differ on this machine (e.g. engine.orca.executable); it must give the
card's engine tag.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pairfactory.cli import load_config_arg
from pairfactory.cli.optimize import DEFAULT_PARTS_CACHE
from pairfactory.errors import UserError
from pairfactory.qm.solvation import DEFAULT_SOLVATION_CACHE

if TYPE_CHECKING:
    import pandas as pd

    from pairfactory.ml.model_dir import ModelCard

log = logging.getLogger(__name__)

PARENTS = ("config", "log", "progress")

EPILOG = """examples:
  pairfactory predict --model-dir results/models/freesolv/dg_hydration_kcal_mol/probpair_2d \\
      --solute CCO --solvent O
  pairfactory predict --model-dir results/models/freesolv/dg_hydration_kcal_mol/probpair_2d \\
      --input pairs.csv --solute-column solute --solvent-column solvent --out predictions.parquet
  # a semicolon-separated file, CSV out
  pairfactory predict --model-dir DIR --input pairs.csv --delimiter ';' \\
      --solute-column SMILES --solvent-column Solvent --out predictions.csv
  # a model that reads ALPB ΔG_solv: computed with xtb, cached where the workflow caches it
  # (--parts-cache, --solvation-cache: another place)
  pairfactory predict --model-dir results/models/freesolv/dg_hydration_kcal_mol/probpair_2d_alpb \\
      --solute CCO --solvent O
  # ... a screen of new molecules: their inputs computed in 8 processes
  pairfactory predict --model-dir DIR --input screen.csv --out screen.parquet --qm-jobs 8
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
    alpb = parser.add_argument_group(
        "models that read ALPB ΔG_solv (alpb_input), computed with the xtb program"
    )
    alpb.add_argument(
        "--parts-cache",
        type=Path,
        default=DEFAULT_PARTS_CACHE,
        help="isolated molecules optimized by the model's QM engine (default: %(default)s)",
    )
    alpb.add_argument(
        "--solvation-cache",
        type=Path,
        default=DEFAULT_SOLVATION_CACHE,
        help="ΔG_solv per molecule and solvent (default: %(default)s)",
    )
    alpb.add_argument("--xtb", default=None, help="the xtb program (default: xtb on PATH)")
    alpb.add_argument(
        "--qm-threads", type=int, default=1, help="threads of the QM engine (default 1)"
    )
    alpb.add_argument(
        "--qm-jobs",
        type=int,
        default=1,
        help="processes computing the inputs of new molecules, one solute each (default 1)",
    )


def run(args: argparse.Namespace) -> int:
    single = args.solute is not None or args.solvent is not None
    if single == (args.input is not None):
        raise UserError("give either --solute and --solvent (one pair) or --input (a file)")
    if single and (args.solute is None or args.solvent is None):
        raise UserError("one pair needs both --solute and --solvent")
    if args.input is not None and args.out is None:
        raise UserError("--input needs --out (a .parquet or .csv file to write)")
    from pairfactory.ml.model_dir import read_card
    from pairfactory.ml.predictor import load_model

    inputs = input_provider(
        read_card(args.model_dir),
        args.parts_cache,
        args.solvation_cache,
        xtb_binary=args.xtb,
        threads=args.qm_threads,
        workers=args.qm_jobs,
        progress=not args.no_progress,
        engine_config=load_config_arg(args)["engine"] if args.config else None,
    )
    try:
        return _predict(
            args,
            load_model(
                args.model_dir,
                device=args.device,
                num_threads=args.threads,
                min_solute_similarity=args.min_similarity,
                inputs=inputs,
            ),
            single,
        )
    finally:
        if inputs is not None:  # its process pool (--qm-jobs) ends here, not at interpreter exit
            inputs.close()


def _predict(args: argparse.Namespace, model: Any, single: bool) -> int:
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


def input_provider(
    card: ModelCard,
    parts_cache: str | Path = DEFAULT_PARTS_CACHE,
    solvation_cache: str | Path = DEFAULT_SOLVATION_CACHE,
    *,
    xtb_binary: str | None = None,
    threads: int = 1,
    workers: int = 1,
    progress: bool = False,
    engine_config: Mapping[str, Any] | None = None,
) -> _SolvationInputs | None:
    """The function that computes the per-pair inputs of the model of ``card`` as its training
    table computed them (``PairSolvation`` with the engine the card records), or None for a model
    that reads none. ``engine_config`` (a config's ``engine`` section) replaces the card's where
    this machine differs (the ORCA binary's path, threads), and must give the same engine tag. A
    missing xtb program, or an engine whose settings give another tag (other results), is a
    UserError before the first pair."""
    if not card.inputs:
        return None
    from pairfactory.qm.descriptors import PAIR_COLUMNS, PairSolvation
    from pairfactory.qm.settings import QmSettings
    from pairfactory.qm.solvation import xtb_version

    names = list(card.inputs["names"])
    unknown = [name for name in names if name not in PAIR_COLUMNS]
    if unknown:
        raise UserError(
            f"the model reads {', '.join(unknown)}, which this pairfactory cannot compute at "
            f"prediction (it computes {', '.join(PAIR_COLUMNS)}); use the version it was "
            "trained with"
        )
    qm = card.inputs["qm"]
    settings = QmSettings.from_config({"engine": engine_config or qm["engine"]})
    if settings.engine_tag != qm["engine_tag"]:
        raise UserError(
            f"the config's engine has tag {settings.engine_tag}, the model's inputs were computed "
            f"with tag {qm['engine_tag']} ({qm['engine']}): a config may change only the "
            "settings that do not change results (an ORCA binary's path, threads, time limits)"
            if engine_config is not None
            else f"the model's QM engine had tag {qm['engine_tag']}; the same settings give "
            f"{settings.engine_tag} in this pairfactory (the engine's results changed), so its "
            "ALPB inputs would differ from training: retrain the model with this version"
        )
    solvation = PairSolvation(
        settings,
        parts_cache,
        solvation_cache,
        threads=threads,
        xtb_binary=xtb_binary,
        require_program=True,
        workers=workers,
    )
    trained_with = card.inputs["descriptors"].get("xtb_versions", [])
    local = xtb_version(xtb_binary)
    if trained_with and local not in trained_with:
        log.warning(
            "the model's ALPB inputs came from xtb %s, this machine has xtb %s: the values may "
            "differ slightly",
            ", ".join(trained_with),
            local,
        )

    return _SolvationInputs(solvation, progress)


@dataclass
class _SolvationInputs:
    """The model's per-pair ALPB inputs, computed on demand; ``close`` ends the worker pool."""

    solvation: Any  # qm.descriptors.PairSolvation
    progress: bool

    def __call__(self, solutes: list[str], solvents: list[str]) -> pd.DataFrame:
        return self.solvation.table(solutes, solvents, progress=self.progress)

    def close(self) -> None:
        self.solvation.close()


def describe(row: dict[str, Any], model: Any) -> str:
    """A prediction for a person: value, unit, σ and the applicability verdict."""
    if row["status"] != "ok":
        return f"no prediction: {row['reason']}"
    t, unit = model.target, model.unit
    parts = [f"{t} = {row[t]:.3f} {unit}"]
    if not math.isnan(row[f"{t}_sigma"]):
        parts.append(f"± {row[f'{t}_sigma']:.3f} (σ, calibrated on the holdout)")
    if not math.isnan(row[f"{t}_ensemble_sigma"]):
        parts.append(
            f"(spread of the {len(model.members)} ensemble members alone, uncalibrated: "
            f"{row[f'{t}_ensemble_sigma']:.3f})"
        )
    if len(parts) == 1:
        parts.append("(no uncertainty: a single point-prediction model; train with --ensemble)")
    inputs = "".join(
        f"\ninput {name} = {row[name]:.3f}"
        for name in model.input_names
        if not math.isnan(row[name])
    )
    if model.input_names and row["input_note"]:
        inputs += f"\ninput: {row['input_note']}"
    verdict = (
        f"EXTRAPOLATION: {row['applicability']}"
        if row["extrapolation"]
        else "inside the training domain"
    )
    return (
        "  ".join(parts)
        + inputs
        + f"\n{verdict} (nearest training solute Tanimoto {row['solute_similarity']:.2f})"
        + f"\nmodel {model.card.model}, {model.card.dataset}/{t}, model time "
        f"{row['model_time_s']:.3f} s"
        + (" (computing the inputs included)" if model.input_names else "")
    )


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if hasattr(value, "item"):
            value = value.item()
        out[key] = None if isinstance(value, float) and math.isnan(value) else value
    return out
