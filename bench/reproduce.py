"""Reproduce the CGIB-paper baselines (AttentiveFP, CIGIN, CGIB) with the full protocol, resumably.

Runs ``pairfactory.ml.evaluate.run_fold`` for every (repeat, fold, table, model) and writes into
``results/evaluate`` (the layout ``pairfactory report`` reads), then the report. Jobs are ordered
breadth first: fold 0 of every table × model, then fold 1, … so that a run cut short by
``--budget-min`` still covers every combination. A finished fold (its metrics.json exists) is
skipped, so rerunning the same command continues where it stopped. With ``--claim``, several
processes running the same command share its jobs: each claims a fold before it runs it, and skips
folds that another live process has claimed (one process per core, 1 thread each).

example (CGIB protocol, 1 thread, stop launching folds after 90 minutes):
  .venv/bin/python bench/reproduce.py --pairs-dir results/pairs \\
      --datasets freesolv_cgib freesolv mnsol --models attentivefp cigin cgib \\
      --epochs 500 --repeats 5 --budget-min 90 --threads 1
two processes sharing one list of folds (2 cores):
  for i in 1 2; do nohup .venv/bin/python bench/reproduce.py --datasets freesolv_cgib \\
      --models cigin --threads 1 --claim --report results/report_$i \\
      > results/reproduce_$i.log 2>&1 & done
background, as used for docs/results.md:
  nohup .venv/bin/python bench/reproduce.py --epochs 150 --repeats 1 --budget-min 95 \\
      > results/reproduce.log 2>&1 &
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write_text
from pairfactory.ml.evaluate import (
    ProtocolOptions,
    fold_dir,
    load_fold_metrics,
    read_pairs,
    run_fold,
)
from pairfactory.ml.extra_pairs import HOLDOUT_LEVELS, ExtraPairSettings
from pairfactory.ml.graph_cache import GraphCache
from pairfactory.ml.models import MODEL_NAMES
from pairfactory.ml.models.registry import model_input_names
from pairfactory.ml.report import write_report
from pairfactory.ml.sample_sets import SampleSetSettings
from pairfactory.ml.splits import SPLIT_KINDS
from pairfactory.pairs.registry import samples_dataset
from protocol_args import add_protocol_arguments, train_settings

# named, not __name__: run as a script, this module is "__main__"
log = logging.getLogger("reproduce")
TARGETS: dict[str, list[str]] = {
    "freesolv_cgib": ["dg_hydration_kcal_mol"],
    "freesolv": ["dg_hydration_kcal_mol"],
    "mnsol": ["dg_solv_kcal_mol"],
    "combisolv": ["dg_solv_kcal_mol"],
    "chromophore": ["absorption_max_nm", "emission_max_nm", "ln_lifetime_ns"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pairs-dir", default="results/pairs", help="pair tables: <dir>/<dataset>/<target>.parquet"
    )
    parser.add_argument(
        "--data-dir",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
        help="raw datasets, used only to curate a missing pair table",
    )
    parser.add_argument("--results", default="results/evaluate")
    parser.add_argument("--report", default="results/report")
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["freesolv_cgib", "freesolv", "mnsol"],
        choices=sorted(TARGETS),
    )
    parser.add_argument(
        "--models", nargs="+", default=["attentivefp", "cigin", "cgib"], choices=MODEL_NAMES
    )
    parser.add_argument("--split", default="random", choices=SPLIT_KINDS)
    parser.add_argument("--folds", type=int, default=5, help="k of k-fold (CGIB: 5)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the k-fold CV (CGIB: 5)")
    parser.add_argument(
        "--run-folds", type=int, default=None, help="run only the first N folds of each repeat"
    )
    parser.add_argument(
        "--only-folds",
        type=int,
        nargs="+",
        default=None,
        help="run only these folds, in this order (e.g. to split folds over two processes)",
    )
    add_protocol_arguments(parser)
    parser.add_argument(
        "--shards-root",
        default=None,
        help="QM samples laid out like results/shards (e.g. ../shared/qm/shards): the folds of "
        "every dataset with samples report covered/uncovered test errors, and models that learn "
        "from samples use them (with --engine-tag)",
    )
    parser.add_argument(
        "--engine-tag", default=None, help="the shards' engine tag, e.g. xtb-5bc9618c"
    )
    parser.add_argument(
        "--descriptors-root",
        default=None,
        help="descriptor tables laid out like results/descriptors "
        "(<root>/<dataset>/<engine tag>/alpb.parquet, from `pairfactory solvation`); with "
        "--extra-pairs, the extra table's dataset's table there is read too",
    )
    parser.add_argument(
        "--ensemble", type=int, default=1, help="members per fold (their spread is a σ)"
    )
    parser.add_argument(
        "--samples",
        default=None,
        metavar="JSON",
        help="sample-set settings (config evaluate.samples), e.g. "
        "'{\"max_samples_per_pair\": 2}' or '{\"train_pair_fraction\": 0.25}'",
    )
    parser.add_argument(
        "--hparams",
        action="append",
        default=[],
        metavar="MODEL=JSON",
        help="hyper-parameters of one model, e.g. 'cigin={\"message_passing_steps\": 3}'",
    )
    parser.add_argument(
        "--extra-pairs",
        default=None,
        metavar="PATH",
        help="another pair table whose rows join every fold's training pairs, minus the fold's "
        "held-out molecules (pairfactory evaluate --extra-pairs), e.g. "
        "results/pairs/combisolv/dg_solv_kcal_mol.parquet",
    )
    parser.add_argument(
        "--extra-holdout", default="solute", choices=HOLDOUT_LEVELS, help="default solute"
    )
    parser.add_argument(
        "--extra-solvent",
        dest="extra_solvents",
        action="append",
        default=[],
        metavar="SMILES",
        help="only the extra rows in this solvent (repeatable), e.g. O",
    )
    parser.add_argument(
        "--budget-min", type=float, default=None, help="launch no new fold after this many minutes"
    )
    parser.add_argument(
        "--report-every", type=int, default=3, help="rewrite the report after every N new folds"
    )
    parser.add_argument(
        "--claim",
        action="store_true",
        help="share the jobs with other processes running the same command: claim each fold "
        "before running it (a file beside the fold's folder) and skip folds claimed by a live "
        "process; a claim left by a killed process is taken over. The processes may share "
        "--report: whichever finishes a fold rewrites it, each file replaced whole",
    )
    return parser.parse_args(argv)


def _claim_path(out: Path) -> Path:
    return out.with_name(out.name + ".claim")


def _holder_alive(text: str) -> bool:
    """Whether the process named in a claim (``host pid``) still runs. A claim from another
    host counts as live: its process cannot be checked from here."""
    host, _, pid = text.strip().partition(" ")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def claim_fold(out: Path) -> bool:
    """Claim a fold for this process; False if a live process holds it. A claim whose process
    has gone (killed, crashed) is replaced, so a rerun resumes. Check and write happen under a
    lock of the fold's folder, so two processes that meet the same stale claim cannot both take
    it."""
    path = _claim_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = f"{socket.gethostname()} {os.getpid()}\n"
    with open(path.parent / ".claims.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            held = path.read_text()
        except FileNotFoundError:  # none, or just released (release takes no lock)
            held = None
        if held is not None and held != mine and _holder_alive(held):
            return False
        atomic_write_text(path, mine)
        return True


def release_fold(out: Path) -> None:
    _claim_path(out).unlink(missing_ok=True)


def _curate(dataset: str, data_dir: str, pairs_dir: str) -> None:
    """Build a missing pair table with the pairs stage (same code as `pairfactory pairs`)."""
    from pairfactory.pairs import curate, write_curated

    log.info("curating %s from %s into %s", dataset, data_dir, pairs_dir)
    write_curated(curate(dataset, data_dir=data_dir), pairs_dir)


def _with_samples(
    options: ProtocolOptions, args: argparse.Namespace, dataset: str, model: str
) -> Any:
    """The options of one dataset's folds: its shard folder and descriptor table, where given;
    for a model that reads a descriptor of every pair (alpb_input) with --extra-pairs, also the
    extra table's dataset's descriptor table, laid out alike, where there is one (other models
    are left as they were: their auxiliary targets stay those of the table's own pairs)."""
    if args.shards_root is None:
        return options
    if args.engine_tag is None:
        raise UserError("--shards-root needs --engine-tag")
    source = samples_dataset(dataset)
    shards = Path(args.shards_root) / source / args.engine_tag
    if not shards.is_dir():
        return options
    descriptors = None
    extra_pairs = options.extra_pairs
    if args.descriptors_root is not None:
        candidate = Path(args.descriptors_root) / source / args.engine_tag / "alpb.parquet"
        descriptors = candidate if candidate.is_file() else None
        reads_inputs = bool(model_input_names(model, options.hparams_for(model)))
        if extra_pairs is not None and descriptors is not None and reads_inputs:
            extra_name = Path(extra_pairs.path).parent.name
            extra_source = samples_dataset(extra_name)
            extra = Path(args.descriptors_root) / extra_source / args.engine_tag / "alpb.parquet"
            if extra.is_file():
                extra_pairs = replace(extra_pairs, descriptors=extra)
    return replace(options, shards_dir=shards, descriptors=descriptors, extra_pairs=extra_pairs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.only_folds and not all(0 <= f < args.folds for f in args.only_folds):
        raise UserError(f"--only-folds must be in 0..{args.folds - 1} (got {args.only_folds})")
    settings = train_settings(args)
    model_hparams = {}
    for item in args.hparams:
        name, _, text = item.partition("=")
        if name not in MODEL_NAMES or not text:
            raise UserError(f"--hparams {item!r}: expected MODEL=JSON with MODEL in {MODEL_NAMES}")
        model_hparams[name] = json.loads(text)
    try:
        samples = SampleSetSettings(**json.loads(args.samples or "{}"), seed=args.seed)
    except (TypeError, json.JSONDecodeError) as err:
        raise UserError(
            f"--samples {args.samples!r}: expected a JSON object of evaluate.samples settings "
            f"({err})"
        ) from err
    options = ProtocolOptions(
        settings=settings,
        n_folds=args.folds,
        seed=args.seed,
        graph_cache=Path(args.graph_cache),
        model_hparams=model_hparams,
        samples=samples,
        ensemble=args.ensemble,
        extra_pairs=None
        if args.extra_pairs is None
        else ExtraPairSettings(
            Path(args.extra_pairs), args.extra_holdout, tuple(args.extra_solvents)
        ),
    )

    tables = {}
    for dataset in args.datasets:
        for target in TARGETS[dataset]:
            path = Path(args.pairs_dir) / dataset / f"{target}.parquet"
            if not path.is_file():
                _curate(dataset, args.data_dir, args.pairs_dir)
            tables[(dataset, target)] = (path, read_pairs(path))
            log.info(
                "%s/%s: %d pairs from %s", dataset, target, len(tables[(dataset, target)][1]), path
            )

    jobs = [
        (repeat, fold, dataset, target, model)
        for repeat in range(args.repeats)
        for fold in (args.only_folds or range(min(args.folds, args.run_folds or args.folds)))
        for (dataset, target) in tables
        for model in args.models
    ]
    cache = GraphCache(options.graph_cache)  # one cache for all folds: featurize each SMILES once
    started = time.monotonic()
    new_folds = skipped = claimed_elsewhere = 0
    for i, (repeat, fold, dataset, target, model) in enumerate(jobs, 1):
        out = fold_dir(args.results, dataset, target, model, args.split, repeat, fold)
        if load_fold_metrics(out) is not None:
            skipped += 1
            continue
        elapsed_min = (time.monotonic() - started) / 60
        if args.budget_min is not None and elapsed_min > args.budget_min:
            log.info(
                "time budget of %.0f min used: stopping before job %d of %d",
                args.budget_min,
                i,
                len(jobs),
            )
            break
        if args.claim:
            if not claim_fold(out):
                claimed_elsewhere += 1
                continue
            if load_fold_metrics(out) is not None:  # finished by another process meanwhile
                release_fold(out)
                skipped += 1
                continue
        log.info(
            "job %d/%d (%.1f min so far): %s/%s %s r%d f%d",
            i,
            len(jobs),
            elapsed_min,
            dataset,
            target,
            model,
            repeat,
            fold,
        )
        path, table = tables[(dataset, target)]
        try:
            metrics = run_fold(
                path,
                model,
                args.split,
                fold,
                repeat,
                out,
                _with_samples(options, args, dataset, model),
                table=table,
                progress=False,
                cache=cache,
            )
        finally:
            if args.claim:
                release_fold(out)
        log.info(
            "  → test RMSE %.4f at epoch %d of %d (%.0f s)",
            metrics["rmse"],
            metrics["best_epoch"],
            metrics["epochs_run"],
            metrics["seconds"],
        )
        new_folds += 1
        if new_folds % args.report_every == 0:
            write_report(args.results, args.report)
    written = write_report(args.results, args.report)
    log.info(
        "done: %d new folds, %d already finished, %d running in other processes; report %s",
        new_folds,
        skipped,
        claimed_elsewhere,
        written["markdown"],
    )
    print(
        json.dumps(
            {
                "new_folds": new_folds,
                "skipped": skipped,
                "claimed_elsewhere": claimed_elsewhere,
                "report": str(written["markdown"]),
            }
        )
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        sys.exit(2)
