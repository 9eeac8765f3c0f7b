"""Train a final model on a whole pair table into a model folder (weights, card, domain).

A seeded holdout (config train.holdout_fraction, 10 % by default) stops training early and
calibrates σ; the settings and hyper-parameters are the config's `evaluate` section (what
validation chose), then the flags. With --ensemble N, N members are trained with seeds seed, ...,
seed+N-1. The training state is checkpointed every config train.checkpoint_every_min minutes:
rerun the same command after a kill or a time limit and it resumes, ending with the numbers of an
uninterrupted run. A finished folder (model.json) is left alone unless --force. A model that reads
ALPB ΔG_solv as an input (alpb_input: true) reads it from --descriptors and records the config's QM
engine, which must be the one that made that table: `pairfactory predict` computes the value of
each new pair with it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from pairfactory.cli import load_config_arg

PARENTS = ("config", "log", "progress")

EPILOG = """examples:
  # the 2D twin of our model on FreeSolv, an ensemble of 5, settings from config.yaml
  pairfactory train --config config.yaml \\
      --pairs results/pairs/freesolv/dg_hydration_kcal_mol.parquet --model probpair_2d \\
      --ensemble 5 --out-dir results/models/freesolv/dg_hydration_kcal_mol/probpair_2d
  # our model with the QM samples and ALPB descriptors of the workflow
  pairfactory train --config config.yaml \\
      --pairs results/pairs/freesolv/dg_hydration_kcal_mol.parquet --model probpair \\
      --shards-dir results/shards/freesolv/xtb-1a2b3c4d \\
      --descriptors results/descriptors/freesolv/xtb-1a2b3c4d/alpb.parquet \\
      --out-dir results/models/freesolv/dg_hydration_kcal_mol/probpair
  # the labelled variant that also reads ALPB ΔG_solv (predict computes it with xtb); the
  # config must be the one whose engine made the descriptor table
  pairfactory train --config config.yaml \\
      --pairs results/pairs/freesolv/dg_hydration_kcal_mol.parquet --model probpair_2d \\
      --hparams '{"alpb_input": true}' \\
      --descriptors results/descriptors/freesolv/xtb-1a2b3c4d/alpb.parquet \\
      --out-dir results/models/freesolv/dg_hydration_kcal_mol/probpair_2d_alpb
then: pairfactory predict --model-dir results/models/freesolv/dg_hydration_kcal_mol/probpair_2d \\
      --solute CCO --solvent O
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pairfactory.cli.evaluate import add_table_and_model_arguments, add_training_arguments

    parser.epilog = EPILOG
    add_table_and_model_arguments(parser)
    parser.add_argument(
        "--out-dir", type=Path, required=True, metavar="DIR", help="the model folder to write"
    )
    parser.add_argument(
        "--ensemble", type=int, default=1, help="members with consecutive seeds (default 1)"
    )
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        help="held-out fraction for early stopping and σ calibration (default: config "
        "train.holdout_fraction, 0.1)",
    )
    parser.add_argument(
        "--checkpoint-every-min",
        type=float,
        help="minutes between training checkpoints (default: config train.checkpoint_every_min, 5)",
    )
    add_training_arguments(parser)
    parser.add_argument(
        "--force", action="store_true", help="retrain from scratch even if the folder is finished"
    )


def run(args: argparse.Namespace) -> int:
    from pairfactory.cli.evaluate import options_from_config, pair_table_name
    from pairfactory.ml.final import FinalSettings, train_final
    from pairfactory.ml.model_dir import CARD_FILE
    from pairfactory.ml.models.registry import model_input_names
    from pairfactory.qm.settings import QmSettings

    config = load_config_arg(args)
    options = options_from_config(config, args, pair_table_name(args.pairs))
    section = config.get("train", {})
    final = FinalSettings(
        ensemble=args.ensemble,
        holdout_fraction=args.holdout_fraction
        if args.holdout_fraction is not None
        else float(section.get("holdout_fraction", 0.1)),
        checkpoint_every_s=60.0
        * (
            args.checkpoint_every_min
            if args.checkpoint_every_min is not None
            else float(section.get("checkpoint_every_min", 5))
        ),
    )
    input_source = None
    if model_input_names(args.model, options.hparams_for(args.model)):
        settings = QmSettings.from_config(config)
        input_source = {"engine": settings.engine_config(), "engine_tag": settings.engine_tag}
    if args.force and args.out_dir.exists():
        shutil.rmtree(args.out_dir)
    card = train_final(
        args.pairs,
        args.model,
        args.out_dir,
        options,
        final,
        progress=not args.no_progress,
        input_source=input_source,
    )
    print(
        json.dumps(
            {
                "model_dir": str(args.out_dir),
                "card": str(args.out_dir / CARD_FILE),
                "model": card.model,
                "target": card.target,
                "members": len(card.members),
                "holdout_rmse": card.metrics["holdout_rmse"],
            }
        )
    )
    return 0
