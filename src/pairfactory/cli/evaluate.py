"""Train and evaluate one model on one fold of a pair table (the CGIB cross-validation protocol).

Writes metrics.json, predictions.parquet, history.csv and model.pt into --out-dir (metrics.json
last: a fold that has it is skipped unless --force). Settings: the config's `seed` and
`evaluate` section (their schema defaults are CGIB's protocol), then the flags below.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pairfactory.cli import load_config_arg
from pairfactory.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pairfactory.ml.evaluate import ProtocolOptions
    from pairfactory.ml.extra_pairs import ExtraPairSettings

PARENTS = ("config", "log", "progress")

EPILOG = """examples:
  # fold 0 of repeat 0, CGIB defaults (500 epochs, batch 256, lr 1e-3, early stop 50)
  pairfactory evaluate --pairs results/pairs/freesolv/dg_hydration_kcal_mol.parquet \\
      --model cigin --split random --fold 0 --repeat 0 \\
      --out-dir results/evaluate/freesolv/dg_hydration_kcal_mol/cigin/random/r0-f0
  # hyper-parameters from config.yaml (section `evaluate`), 50 epochs, rerun even if finished
  pairfactory evaluate --config config.yaml --pairs results/pairs/mnsol/dg_solv_kcal_mol.parquet \\
      --model cgib --split scaffold --fold 2 \\
      --out-dir results/evaluate/mnsol/dg_solv_kcal_mol/cgib/scaffold/r0-f2 --epochs 50 --force
  # our model, learning from the workflow's QM samples, ALPB ΔG_solv as auxiliary target
  pairfactory evaluate --pairs results/pairs/freesolv/dg_hydration_kcal_mol.parquet \\
      --model probpair --shards-dir results/shards/freesolv/xtb-1a2b3c4d \\
      --descriptors results/descriptors/freesolv/xtb-1a2b3c4d/alpb.parquet \\
      --out-dir results/evaluate/freesolv/dg_hydration_kcal_mol/probpair/random/r0-f0
  # CGIB with a smaller bottleneck weight (published default: beta 1.0)
  pairfactory evaluate --pairs results/pairs/freesolv_cgib/dg_hydration_kcal_mol.parquet \\
      --model cgib --hparams '{"beta": 0.0001}' \\
      --out-dir results/tune/freesolv_cgib/dg_hydration_kcal_mol/cgib@beta=0.0001/random/r0-f0
  # CombiSolv-Exp's water pairs as extra training pairs (never the fold's held-out solutes)
  pairfactory evaluate --pairs results/pairs/freesolv_cgib/dg_hydration_kcal_mol.parquet \\
      --model cigin --extra-pairs results/pairs/combisolv/dg_solv_kcal_mol.parquet \\
      --extra-solvent O --out-dir results/extra/freesolv_cgib/cigin/r0-f0
  # the same for the twin that reads ALPB: each dataset's descriptor table
  pairfactory evaluate --pairs results/pairs/freesolv_cgib/dg_hydration_kcal_mol.parquet \\
      --model probpair_2d --hparams '{"alpb_input": true}' \\
      --descriptors results/descriptors/freesolv_cgib/xtb-1a2b3c4d/alpb.parquet \\
      --extra-pairs results/pairs/combisolv/dg_solv_kcal_mol.parquet --extra-solvent O \\
      --extra-descriptors results/descriptors/combisolv/xtb-1a2b3c4d/alpb.parquet \\
      --out-dir results/extra/freesolv_cgib/probpair_2d@alpb_input=true/r0-f0
"""

# metrics.json keys printed as the command's one-line JSON summary
SUMMARY_KEYS = (
    "dataset",
    "target",
    "model",
    "split",
    "repeat",
    "fold",
    "rmse",
    "mae",
    "r2",
    "best_epoch",
)
# config key of the `evaluate` section -> TrainSettings field
_CONFIG_SETTINGS = (
    ("epochs", "max_epochs"),
    ("batch_size", "batch_size"),
    ("learning_rate", "lr"),
    ("weight_decay", "weight_decay"),
    ("patience", "patience"),
    ("device", "device"),
    ("threads", "num_threads"),
    ("standardize_targets", "standardize_targets"),
)
# flag dest -> TrainSettings field
_FLAG_SETTINGS = (
    ("epochs", "max_epochs"),
    ("batch_size", "batch_size"),
    ("lr", "lr"),
    ("weight_decay", "weight_decay"),
    ("patience", "patience"),
    ("lr_factor", "lr_factor"),
    ("lr_patience", "lr_patience"),
    ("device", "device"),
    ("threads", "num_threads"),
    ("standardize_targets", "standardize_targets"),
)


def options_from_config(
    config: Mapping[str, Any] | None,
    args: argparse.Namespace | None = None,
    table: str | None = None,
) -> ProtocolOptions:
    """Protocol options: CGIB defaults, then the config's ``seed`` and ``evaluate`` section (its
    ``table_hparams`` of ``table``, ``dataset/target``, over its ``model_hparams``), then the
    flags. The one place the raw config is read for a fold."""
    from pairfactory.ml.evaluate import ProtocolOptions
    from pairfactory.ml.graph_cache import DEFAULT_GRAPH_CACHE
    from pairfactory.ml.sample_sets import SampleSetSettings
    from pairfactory.ml.train import TrainSettings

    section = dict((config or {}).get("evaluate", {}))
    values: dict[str, Any] = {}
    if config is not None:
        for key, name in _CONFIG_SETTINGS:
            if key in section:
                values[name] = section[key]
        if "patience" in section and section["patience"] is None:  # null = never stop early
            values["patience"] = section.get("epochs", TrainSettings.max_epochs)
    hparams: dict[str, Any] = {}
    if section.get("hidden_dim") is not None:  # null = the model's published default
        hparams["hidden_dim"] = int(section["hidden_dim"])
    model_hparams = {
        name: dict(given) for name, given in (section.get("model_hparams") or {}).items()
    }
    for name, given in ((section.get("table_hparams") or {}).get(table) or {}).items():
        model_hparams.setdefault(name, {}).update(given)
    n_folds = int(section.get("folds", 5))
    ensemble = int(section.get("ensemble", 1))
    seed = int((config or {}).get("seed", 0))
    if args is not None:
        for flag, name in _FLAG_SETTINGS:
            if getattr(args, flag, None) is not None:
                values[name] = getattr(args, flag)
        if args.hidden_dim is not None:
            hparams["hidden_dim"] = args.hidden_dim
        # a flag is about the model this call runs: it wins over that model's own setting in
        # the config's model_hparams (e.g. full.yaml's probpair lr), which would else win over
        # the shared value the flag sets
        own = model_hparams.get(getattr(args, "model", None), {})
        for flag, name in (*_FLAG_SETTINGS, ("hidden_dim", "hidden_dim")):
            if getattr(args, flag, None) is not None:
                own.pop(name, None)
        if args.hparams:
            try:
                extra = json.loads(args.hparams)
            except json.JSONDecodeError as err:
                raise UserError(
                    f"--hparams must be a JSON object, e.g. '{{\"hidden_dim\": 52}}' ({err})"
                ) from err
            if not isinstance(extra, dict):
                raise UserError("--hparams must be a JSON object, e.g. '{\"hidden_dim\": 52}'")
            # the flag is about the model this call runs, so it wins over the config's
            # model_hparams
            model_hparams.setdefault(args.model, {}).update(extra)
        if getattr(args, "folds", None) is not None:
            n_folds = args.folds
        if getattr(args, "fold_ensemble", None) is not None:
            ensemble = args.fold_ensemble
        if args.seed is not None:
            seed = args.seed
    graph_cache = (
        Path(args.graph_cache) if args is not None and args.graph_cache else DEFAULT_GRAPH_CACHE
    )
    samples = SampleSetSettings(**dict(section.get("samples") or {}), seed=seed)
    extra_pairs = _extra_pair_settings(section.get("extra_pairs") or {}, args)
    shards_dir = getattr(args, "shards_dir", None) if args is not None else None
    descriptors = getattr(args, "descriptors", None) if args is not None else None
    return ProtocolOptions(
        settings=TrainSettings.from_mapping(values),
        n_folds=n_folds,
        seed=seed,
        hparams=hparams,
        model_hparams=model_hparams,
        graph_cache=graph_cache,
        shards_dir=None if shards_dir is None else Path(shards_dir),
        descriptors=None if descriptors is None else Path(descriptors),
        samples=samples,
        ensemble=ensemble,
        extra_pairs=extra_pairs,
    )


def _extra_pair_settings(
    section: Mapping[str, Any], args: argparse.Namespace | None
) -> ExtraPairSettings | None:
    """The config's ``evaluate.extra_pairs`` (its ``table`` found beside --pairs, in the same
    pairs folder), then the --extra-* flags; None without an extra table."""
    from pairfactory.ml.extra_pairs import ExtraPairSettings

    path = None
    if section.get("table") and args is not None and getattr(args, "pairs", None):
        dataset, target = str(section["table"]).split("/", 1)
        path = Path(args.pairs).parent.parent / dataset / f"{target}.parquet"
    holdout = section.get("holdout", "solute")
    solvents = tuple(section.get("solvents") or ())
    descriptors = None
    if args is not None:
        path = getattr(args, "extra_pairs", None) or path
        holdout = getattr(args, "extra_holdout", None) or holdout
        solvents = tuple(getattr(args, "extra_solvents", None) or ()) or solvents
        descriptors = getattr(args, "extra_descriptors", None)
        if path is None and (
            getattr(args, "extra_holdout", None)
            or getattr(args, "extra_solvents", None)
            or descriptors
        ):
            raise UserError(
                "--extra-holdout, --extra-solvent and --extra-descriptors need --extra-pairs PATH"
            )
    if path is None:
        return None
    return ExtraPairSettings(
        path=Path(path),
        holdout=holdout,
        solvents=solvents,
        descriptors=None if descriptors is None else Path(descriptors),
    )


def add_table_and_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--pairs and --model, as `evaluate` and `train` take them."""
    from pairfactory.ml.models import MODEL_NAMES

    parser.add_argument(
        "--pairs",
        required=True,
        metavar="PATH",
        help="pair table (results/pairs/<dataset>/<target>.parquet)",
    )
    parser.add_argument("--model", required=True, choices=MODEL_NAMES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pairfactory.ml.splits import SPLIT_KINDS

    parser.epilog = EPILOG
    add_table_and_model_arguments(parser)
    parser.add_argument(
        "--split", default="random", choices=SPLIT_KINDS, help="fold kind (default random, as CGIB)"
    )
    parser.add_argument("--fold", type=int, default=0, help="which fold, 0-based (default 0)")
    parser.add_argument(
        "--repeat", type=int, default=0, help="which repeat, 0-based; changes the seeds (default 0)"
    )
    parser.add_argument(
        "--out-dir",
        "--out",  # the old name, still accepted
        dest="out_dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="output folder of this fold (--out is the old name of this flag)",
    )
    parser.add_argument(
        "--folds", type=int, help="k of k-fold (default 5 or config evaluate.folds)"
    )
    parser.add_argument(
        "--ensemble",
        dest="fold_ensemble",
        type=int,
        help="members per fold, their spread a σ (default 1 or config evaluate.ensemble)",
    )
    add_training_arguments(parser)
    parser.add_argument("--force", action="store_true", help="rerun even if metrics.json exists")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags over the config's ``evaluate`` settings that `evaluate` and `train` share (what
    :func:`options_from_config` reads)."""
    from pairfactory.ml.graph_cache import DEFAULT_GRAPH_CACHE
    from pairfactory.ml.train import DEVICES

    parser.add_argument("--epochs", type=int, help="maximum epochs (CGIB: 500)")
    parser.add_argument("--batch-size", type=int, help="training batch size (CGIB: 256)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (CGIB: 1e-3)")
    parser.add_argument("--weight-decay", type=float, help="Adam weight decay (CGIB: 0)")
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs (CGIB: 50)")
    parser.add_argument("--lr-factor", type=float, help="ReduceLROnPlateau factor (default 0.1)")
    parser.add_argument("--lr-patience", type=int, help="ReduceLROnPlateau patience (CGIB: 20)")
    parser.add_argument(
        "--standardize-targets",
        action="store_true",
        default=None,
        help="train on targets standardized with the training set's mean and std "
        "(not in CGIB's protocol)",
    )
    parser.add_argument(
        "--hidden-dim", type=int, help="model hidden size (passed to models.build_model)"
    )
    parser.add_argument(
        "--hparams",
        help="hyper-parameters of --model as a JSON object, e.g. '{\"beta\": 0.01}' "
        "(over the config's evaluate.model_hparams and the table's evaluate.table_hparams; names: "
        "pairfactory.ml.models.default_hparams; training settings such as lr or batch_size "
        "apply to this model's training)",
    )
    parser.add_argument("--seed", type=int, help="master seed (default: config `seed`, else 0)")
    parser.add_argument("--device", choices=DEVICES, help="default auto: CUDA when usable")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--graph-cache",
        metavar="PATH",
        help=f"graph cache location (default {DEFAULT_GRAPH_CACHE})",
    )
    parser.add_argument(
        "--shards-dir",
        metavar="DIR",
        help="the dataset's QM samples (one engine tag's shard folder, e.g. "
        "results/shards/freesolv/xtb-1a2b3c4d): test errors are then reported for pairs with and "
        "without samples, and models that learn from samples (probpair) use their training "
        "pairs' samples",
    )
    parser.add_argument(
        "--extra-pairs",
        metavar="PATH",
        help="another pair table (same unit) whose rows join the training pairs, never the "
        "validation or test pairs; rows of held-out molecules are left out (--extra-holdout). "
        "E.g. CombiSolv-Exp's water pairs for FreeSolv: --extra-pairs "
        "results/pairs/combisolv/dg_solv_kcal_mol.parquet --extra-solvent O "
        "(default: config evaluate.extra_pairs.table, none)",
    )
    parser.add_argument(
        "--extra-holdout",
        choices=("solute", "pair"),
        help="leave out every extra row whose solute is a validation or test solute (solute, "
        "the default) or only the validation and test pairs themselves (pair)",
    )
    parser.add_argument(
        "--extra-solvent",
        dest="extra_solvents",
        action="append",
        metavar="SMILES",
        help="use only the extra rows in this solvent (repeatable; default: every solvent)",
    )
    parser.add_argument(
        "--extra-descriptors",
        metavar="PATH",
        help="the extra table's descriptor table (`pairfactory solvation --dataset <its "
        "dataset>`), read with --descriptors: a model that reads ALPB needs the extra pairs' "
        "values too",
    )
    parser.add_argument(
        "--descriptors",
        metavar="PATH",
        help="per-system descriptors (Parquet from `pairfactory solvation`: the ALPB ΔG_solv), "
        "auxiliary targets of the training pairs for a model that learns from the samples "
        "(probpair, with --shards-dir), and an input of every pair for a model that reads it "
        "(probpair or probpair_2d with alpb_input: true); other models ignore it",
    )


def pair_table_name(path: str | Path) -> str:
    """``dataset/target`` of a pair table: the key of the config's ``evaluate.table_hparams``."""
    from pairfactory.ml.evaluate import read_pairs

    table = read_pairs(path)
    return f"{table['dataset'].iloc[0]}/{table['target'].iloc[0]}"


def run(args: argparse.Namespace) -> int:
    from pairfactory.ml.evaluate import run_fold

    options = options_from_config(load_config_arg(args), args, pair_table_name(args.pairs))
    metrics = run_fold(
        args.pairs,
        args.model,
        args.split,
        args.fold,
        args.repeat,
        args.out_dir,
        options,
        force=args.force,
        progress=not args.no_progress,
    )
    print(json.dumps({key: metrics[key] for key in SUMMARY_KEYS}))
    return 0
