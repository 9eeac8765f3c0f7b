"""Select a model's hyper-parameters on validation data: run a grid over the same CV folds, then
choose the setting with the lowest mean validation RMSE (test RMSE is reported, never used to
choose).

Each (setting, repeat, fold) is one `pairfactory evaluate` fold (same protocol, seeds and outputs),
written under ``<results>/<dataset>/<target>/<model>@<setting>/<split>/r<repeat>-f<fold>``; a fold
whose metrics.json exists is skipped, so rerunning the same command continues where it stopped.
Prints the grid as a Markdown table and writes it, with a CSV, beside the folds.

example (CGIB's bottleneck weight on CGIB's FreeSolv, 5 folds, 4 processes of 1 thread):
  .venv/bin/python bench/select_hparams.py \\
      --pairs results/pairs/freesolv_cgib/dg_hydration_kcal_mol.parquet \\
      --model cgib --grid '{"beta": [1, 0.1, 0.01, 0.001, 0.0001, 0]}' --jobs 4
summarize folds that ran elsewhere (no training):
  .venv/bin/python bench/select_hparams.py --pairs results/pairs/mnsol/dg_solv_kcal_mol.parquet \\
      --model cgib --grid '{"beta": [1, 0.1, 0.01, 0.001, 0.0001, 0]}' \\
      --results results/tune-device --no-run
then use the choice, e.g. in config.yaml:  evaluate: {model_hparams: {cgib: {beta: 0.0001}}}
one budget for every model: training settings (batch_size, lr, weight_decay) may be grid keys too
(and model_hparams keys: evaluate: {model_hparams: {probpair: {lr: 0.0003}}}),
e.g. for our model with its samples (and the same grid for probpair_2d and cigin):
  .venv/bin/python bench/select_hparams.py \
      --pairs results/pairs/freesolv_cgib/dg_hydration_kcal_mol.parquet --model probpair \
      --grid '{"batch_size": [16, 32, 64], "lr": [0.001, 0.0003]}' --standardize-targets \
      --shards-dir ../shared/qm/shards/freesolv/xtb-5bc9618c \
      --descriptors results/descriptors/freesolv/xtb-5bc9618c/alpb.parquet --jobs 2
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write_text
from pairfactory.ml.evaluate import ProtocolOptions, load_fold_metrics, read_pairs, run_fold
from pairfactory.ml.graph_cache import GraphCache
from pairfactory.ml.models import MODEL_NAMES
from pairfactory.ml.splits import SPLIT_KINDS
from pairfactory.ml.train import TrainSettings
from pairfactory.ml.tune import (
    grid_points,
    parse_grid,
    read_setting_metrics,
    select_setting,
    setting_label,
    summarize_settings,
    summary_table,
)
from protocol_args import add_protocol_arguments, train_settings

# named, not __name__: run as a script, this module is "__main__"
log = logging.getLogger("select_hparams")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pairs", required=True, help="pair table, results/pairs/<dataset>/<target>.parquet"
    )
    parser.add_argument("--model", required=True, choices=MODEL_NAMES)
    parser.add_argument(
        "--grid",
        required=True,
        help="JSON object of value lists, e.g. '{\"beta\": [1, 0.1, 0.01]}'",
    )
    parser.add_argument(
        "--results", default="results/tune", help="where the folds and the selection table go"
    )
    parser.add_argument("--split", default="random", choices=SPLIT_KINDS)
    parser.add_argument("--folds", type=int, default=5, help="k of k-fold (CGIB: 5)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="repeats of the k-fold CV the choice averages over"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="folds run at once, each in its own process"
    )
    add_protocol_arguments(parser)
    parser.add_argument(
        "--shards-dir",
        default=None,
        help="the table's QM samples (one engine tag's shard folder), for models that learn "
        "from them (probpair); every model then reports covered/uncovered test RMSE",
    )
    parser.add_argument(
        "--descriptors", default=None, help="the ALPB descriptor table (pairfactory solvation)"
    )
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="run nothing: only summarize the folds already under --results "
        "(e.g. copied from another machine)",
    )
    return parser.parse_args(argv)


def _run_one(
    pairs: str, model: str, split: str, fold: int, repeat: int, out: str, options: ProtocolOptions
) -> dict:
    logging.basicConfig(level=logging.WARNING)
    return run_fold(pairs, model, split, fold, repeat, out, options, progress=False)


def _run_missing(
    args: argparse.Namespace,
    table: pd.DataFrame,
    root: Path,
    labels: dict[str, dict],
    settings: TrainSettings,
) -> None:
    """Run every (setting, repeat, fold) under ``root`` that has no metrics.json yet."""
    cache = GraphCache(
        args.graph_cache
    )  # featurize once here, so the worker processes only read the cache
    cache.featurize_all(pd.concat([table["solute_smiles"], table["solvent_smiles"]]).unique())
    cache.save()

    todo = []
    for label, point in labels.items():
        # grid keys that are training settings (batch_size, lr, weight_decay, ...) set those
        # (ProtocolOptions.settings_for); the rest are the model's hyper-parameters: one search
        # budget over both, for every model
        options = ProtocolOptions(
            settings=settings,
            n_folds=args.folds,
            seed=args.seed,
            model_hparams={args.model: dict(point)},
            graph_cache=Path(args.graph_cache),
            shards_dir=None if args.shards_dir is None else Path(args.shards_dir),
            descriptors=None if args.descriptors is None else Path(args.descriptors),
        )
        for repeat in range(args.repeats):
            for fold in range(args.folds):
                out = root / label / args.split / f"r{repeat}-f{fold}"
                if load_fold_metrics(out) is None:
                    todo.append((label, repeat, fold, str(out), options))
    log.info(
        "%s %s: %d settings x %d folds, %d to run with %d processes",
        root,
        args.model,
        len(labels),
        args.folds * args.repeats,
        len(todo),
        args.jobs,
    )
    started = time.monotonic()
    # spawn, not fork: the parent has run torch and DGL, whose thread pools do not survive a fork
    with ProcessPoolExecutor(
        max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        futures = {
            pool.submit(_run_one, args.pairs, args.model, args.split, fold, repeat, out, options): (
                label,
                repeat,
                fold,
            )
            for label, repeat, fold, out, options in todo
        }
        for done, future in enumerate(as_completed(futures), 1):
            label, repeat, fold = futures[future]
            metrics = future.result()
            log.info(
                "[%d/%d, %.1f min] %s r%d f%d: valid RMSE %.3f, test RMSE %.3f",
                done,
                len(todo),
                (time.monotonic() - started) / 60,
                label,
                repeat,
                fold,
                metrics["valid_rmse"],
                metrics["rmse"],
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1 (got {args.jobs})")
    table = read_pairs(args.pairs)
    dataset, target, unit = (str(table[c].iloc[0]) for c in ("dataset", "target", "unit"))
    settings = train_settings(args)
    labels = {
        setting_label(args.model, point): point for point in grid_points(parse_grid(args.grid))
    }
    root = Path(args.results) / dataset / target
    if not args.no_run:
        _run_missing(args, table, root, labels, settings)
    summaries = summarize_settings(
        read_setting_metrics(Path(args.results), dataset, target, args.split, list(labels)), labels
    )
    selected = select_setting(summaries, folds_required=args.folds * args.repeats)
    text = (
        f"# {args.model} on {dataset}/{target}, {args.split} split, "
        f"{args.folds} folds x {args.repeats} repeat(s)\n\n"
        f"Selected by the lowest mean validation RMSE: `{selected.label}`.\n\n"
        + summary_table(summaries, selected, unit)
        + "\nTo use it (config.yaml; training settings in it apply to this model only):\n\n"
        + f"    evaluate: {{model_hparams: {{{args.model}: {json.dumps(selected.hparams)}}}}}\n"
    )
    stem = root / f"{args.model}-{args.split}-selection"
    atomic_write_text(stem.with_suffix(".md"), text)
    rows = pd.DataFrame([asdict(s) | {"selected": s.label == selected.label} for s in summaries])
    atomic_write_text(stem.with_suffix(".csv"), rows.to_csv(index=False))
    print(text)
    print(f"written: {stem.with_suffix('.md')} and .csv")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        print(f"select_hparams: error: {err}", file=sys.stderr)
        sys.exit(2)
