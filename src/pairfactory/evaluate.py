"""Train and evaluate one model on one fold of a pair table (the CGIB cross-validation protocol).

One call = one (table, model, split, repeat, fold). It writes, into ``--out``:
``metrics.json`` (test RMSE/MAE/R² at the best-validation epoch, sizes, timing, settings, seeds),
``predictions.parquet`` (pair_id, role, y_true, y_pred for train/valid/test with the best weights),
``history.csv`` (the learning curve) and ``model.pt`` (weights only). ``metrics.json`` is written
last, so its presence marks a finished fold: a rerun skips it unless ``--force``.

Seeds: the split of repeat ``r`` uses ``seed + r`` (random and solute splits; the scaffold split is
seed-free), and the model of repeat ``r`` is initialised and shuffled with ``seed + r`` (CGIB seeds
repeat ``r`` with ``r``). ``seed`` is the config's top-level ``seed`` unless ``--seed`` is given.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairfactory import __version__
from pairfactory.errors import InputFileError, UserError
from pairfactory.io import atomic_write, atomic_write_text
from pairfactory.splits import SPLIT_KINDS, FoldSplit, make_splits
from pairfactory.train import TrainSettings, regression_metrics

LOG = logging.getLogger(__name__)
MODEL_NAMES: tuple[str, ...] = ("attentivefp", "cigin", "cgib", "cgib_contrastive")
METRICS_FILE, PREDICTIONS_FILE, HISTORY_FILE, WEIGHTS_FILE = "metrics.json", "predictions.parquet", "history.csv", "model.pt"
DEFAULT_GRAPH_CACHE = Path("results/graphs/graph_cache.pt")
PAIR_COLUMNS = ("pair_id", "dataset", "target", "solute_smiles", "solvent_smiles", "value", "unit")

EPILOG = """examples:
  # fold 0 of repeat 0, CGIB defaults (500 epochs, batch 256, lr 1e-3, early stop 50)
  pairfactory evaluate --pairs results/pairs/freesolv/dg_hydration_kcal_mol.parquet --model cigin \\
      --split random --fold 0 --repeat 0 \\
      --out results/evaluate/freesolv/dg_hydration_kcal_mol/cigin/random/r0-f0
  # hyper-parameters from config.yaml (section `evaluate`), 50 epochs, rerun even if finished
  pairfactory evaluate --config config.yaml --pairs results/pairs/mnsol/dg_solv_kcal_mol.parquet \\
      --model cgib --split scaffold --fold 2 --out results/evaluate/mnsol/dg_solv_kcal_mol/cgib/scaffold/r0-f2 \\
      --epochs 50 --force
  # CGIB with a smaller bottleneck weight (published default: beta 1.0)
  pairfactory evaluate --pairs results/pairs/freesolv_cgib/dg_hydration_kcal_mol.parquet --model cgib \\
      --hparams '{"beta": 0.0001}' \\
      --out results/tune/freesolv_cgib/dg_hydration_kcal_mol/cgib@beta=0.0001/random/r0-f0
"""


@dataclass(frozen=True)
class ProtocolOptions:
    """Everything besides (table, model, split, repeat, fold) that decides a fold's numbers."""

    settings: TrainSettings = field(default_factory=TrainSettings)
    n_folds: int = 5
    seed: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)  # for every model (config `hidden_dim`)
    # per model name, over `hparams` (config `model_hparams`, then `--hparams` for the model run)
    model_hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    graph_cache: Path = DEFAULT_GRAPH_CACHE

    def hparams_for(self, model_name: str) -> dict[str, Any]:
        """The hyper-parameters a fold of ``model_name`` is built with: the shared ones, then the
        model's own. The shared ``hidden_dim`` goes only to models that have one (AttentiveFP sizes its
        layers with ``graph_feat_size``); every other key is passed on, so a typo still fails."""
        from pairfactory.models import default_hparams

        given = dict(self.hparams)
        if "hidden_dim" in given and "hidden_dim" not in default_hparams(model_name):
            LOG.info("model %s has no hidden_dim; ignoring hidden_dim=%s", model_name, given.pop("hidden_dim"))
        given.update(self.model_hparams.get(model_name, {}))
        return given

    def split_seed(self, repeat: int) -> int:
        return self.seed + repeat

    def model_seed(self, repeat: int) -> int:
        return self.seed + repeat


@dataclass(frozen=True)
class FoldMetrics:
    """The content of ``metrics.json``."""

    dataset: str
    target: str
    unit: str
    model: str
    split: str
    fold: int
    repeat: int
    n_folds: int
    rmse: float  # test set, best-validation epoch
    mae: float
    r2: float
    valid_rmse: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    n_train: int
    n_valid: int
    n_test: int
    n_unfeaturizable: int  # rows of the fold dropped by featurization (listed in unfeaturizable.csv)
    seconds: float
    device: str
    seed: int
    split_seed: int | None
    model_seed: int
    hparams: dict[str, Any]
    settings: dict[str, Any]
    pairs_path: str
    pairfactory_version: str = __version__
    code_commit: str | None = None  # git HEAD of the source tree, when it is a git checkout
    code_dirty: bool | None = None  # uncommitted changes under src/ at run time
    # model output = (y - mean) / std: model.pt predicts in these units (identity unless standardized)
    target_scale: dict[str, float] | None = None


@functools.lru_cache(maxsize=1)
def _code_state() -> tuple[str | None, bool | None]:
    """(HEAD commit, whether src/ has uncommitted changes): which model code produced a fold.
    Taken once per process (cached), because the code a process runs is the code it imported."""
    import subprocess

    src = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(src)], cwd=src, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head.stdout.strip(), bool(dirty.stdout.strip())


# --------------------------------------------------------------------------------------------- I/O


def read_pairs(path: str | Path) -> pd.DataFrame:
    """Read a pair table (docs/architecture.md §1) and check what the protocol relies on."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "pair table not found; build it with `pairfactory pairs` first")
    try:
        from pairfactory.pairs import read_pair_table  # the pairs stage's own validating reader
    except ImportError:
        read_pair_table = None
    try:
        table = read_pair_table(path) if read_pair_table else pd.read_parquet(path)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise InputFileError(path, f"not a readable Parquet pair table: {err}") from err
    missing = [c for c in PAIR_COLUMNS if c not in table.columns]
    if missing:
        raise InputFileError(path, f"missing column(s) {', '.join(missing)}; is this a pair table from `pairfactory pairs`?")
    if table.empty:
        raise InputFileError(path, "pair table has no rows")
    for column in ("dataset", "target", "unit"):
        values = table[column].dropna().unique()
        if len(values) != 1:
            raise InputFileError(path, f"column {column!r} must hold one value, found {list(values)[:5]}")
    if not np.all(np.isfinite(table["value"].to_numpy(dtype=np.float64))):
        raise InputFileError(path, "column 'value' holds non-finite numbers; the pairs stage should have rejected them")
    if table["pair_id"].duplicated().any():
        raise InputFileError(path, "pair_id is not unique")
    return table.reset_index(drop=True)


def load_fold_metrics(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputFileError(path, f"not valid JSON ({err}); delete it or rerun with --force") from err


def fold_dir(root: str | Path, dataset: str, target: str, model: str, split: str, repeat: int, fold: int) -> Path:
    """``<root>/<dataset>/<target>/<model>/<split>/r<repeat>-f<fold>`` (the report reads this layout)."""
    return Path(root) / dataset / target / model / split / f"r{repeat}-f{fold}"


# ------------------------------------------------------------------------------------- protocol


def _datasets_for_fold(table: pd.DataFrame, split: FoldSplit, cache: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    """One PairGraphDataset per role, and the rows featurization could not use (with the reason)."""
    from pairfactory.graphs import PairGraphDataset

    datasets: dict[str, Any] = {}
    dropped = []
    for role, rows in (("train", split.train), ("valid", split.valid), ("test", split.test)):
        part = table.iloc[rows].reset_index(drop=True)
        ds = PairGraphDataset(part, cache)
        rejected = _rejections(ds)
        if len(ds) + len(rejected) != len(part):
            raise AssertionError(f"{role}: {len(part)} rows in, {len(ds)} kept + {len(rejected)} rejected")
        if len(rejected):
            dropped.append(rejected.assign(role=role))
        datasets[role] = ds
    cache.save()  # atomic; later folds and jobs reuse the graphs
    rejected_all = pd.concat(dropped, ignore_index=True) if dropped else pd.DataFrame(columns=["pair_id", "reason", "role"])
    return datasets, rejected_all


def _rejections(ds: Any) -> pd.DataFrame:
    """The dataset's report of unfeaturizable pairs as a frame with pair_id and reason."""
    rejected = getattr(ds, "rejected", None)
    if rejected is None:
        return pd.DataFrame(columns=["pair_id", "reason"])
    if isinstance(rejected, pd.DataFrame):
        return rejected.reset_index(drop=True)
    return pd.DataFrame([asdict(r) if hasattr(r, "__dataclass_fields__") else dict(r) for r in rejected])


def _pair_ids_of(ds: Any, index: np.ndarray) -> np.ndarray:
    """Map the ``PairBatch.index`` values of a dataset back to pair ids."""
    pair_ids = ds.pairs_df["pair_id"].to_numpy(dtype=object)
    return pair_ids[index.astype(np.int64)]


def run_fold(
    pairs_path: str | Path,
    model_name: str,
    split_kind: str,
    fold: int,
    repeat: int,
    out_dir: str | Path,
    options: ProtocolOptions,
    force: bool = False,
    table: pd.DataFrame | None = None,
    progress: bool = True,
    cache: Any = None,
) -> dict[str, Any]:
    """Run one fold end to end and write its four files; return the metrics (also when skipped)."""
    from pairfactory.models import build_model
    from pairfactory.train import save_weights, seed_everything, train_model

    out_dir = Path(out_dir)
    if model_name not in MODEL_NAMES:
        raise UserError(f"unknown model {model_name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if split_kind not in SPLIT_KINDS:
        raise UserError(f"unknown split {split_kind!r}; choose one of {', '.join(SPLIT_KINDS)}")
    if not 0 <= fold < options.n_folds:
        raise UserError(f"--fold must be in 0..{options.n_folds - 1} for {options.n_folds}-fold cross-validation (got {fold})")
    if repeat < 0:
        raise UserError(f"--repeat must be >= 0 (got {repeat})")
    existing = load_fold_metrics(out_dir)
    if existing is not None and not force:
        LOG.info("%s: already finished (metrics.json exists), skipping; use --force to rerun", out_dir)
        return existing

    started = time.perf_counter()
    code_commit, code_dirty = _code_state()
    table = read_pairs(pairs_path) if table is None else table
    dataset, target, unit = (str(table[c].iloc[0]) for c in ("dataset", "target", "unit"))
    split = make_splits(split_kind, table["solute_smiles"].tolist(), n_folds=options.n_folds, seed=options.split_seed(repeat))[fold]
    if cache is None:
        from pairfactory.graphs import GraphCache

        cache = GraphCache(options.graph_cache)
    datasets, rejected = _datasets_for_fold(table, split, cache)
    LOG.info(
        "%s/%s %s %s r%d f%d: train %d, valid %d, test %d pairs (%d unfeaturizable)",
        dataset, target, model_name, split_kind, repeat, fold,
        len(datasets["train"]), len(datasets["valid"]), len(datasets["test"]), len(rejected),
    )

    settings = replace(options.settings, seed=options.model_seed(repeat))
    hparams = options.hparams_for(model_name)
    seed_everything(settings.seed)  # before building: initial weights depend on the seed
    model = build_model(model_name, **hparams)
    result = train_model(model, datasets["train"], datasets["valid"], datasets["test"], settings, log=LOG, progress=progress)

    frames = []
    for role, part in result.predictions.groupby("role", sort=False):
        ids = _pair_ids_of(datasets[role], part["index"].to_numpy())
        frames.append(pd.DataFrame({"pair_id": ids, "role": role, "y_true": part["y_true"].to_numpy(), "y_pred": part["y_pred"].to_numpy()}))
    predictions = pd.concat(frames, ignore_index=True)
    test = predictions[predictions["role"] == "test"]
    test_metrics = regression_metrics(test["y_true"].to_numpy(), test["y_pred"].to_numpy())
    # The best-weights re-evaluation must give the test RMSE recorded at the best epoch.
    if not np.isclose(test_metrics["rmse"], result.test_rmse, rtol=1e-4, atol=1e-6):
        raise AssertionError(f"test RMSE {test_metrics['rmse']} != {result.test_rmse} recorded at the best epoch")

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / PREDICTIONS_FILE, lambda tmp: predictions.to_parquet(tmp, index=False))
    history = result.history_frame()
    atomic_write_text(out_dir / HISTORY_FILE, history.to_csv(index=False))
    save_weights(result.best_state_dict, out_dir / WEIGHTS_FILE)
    if len(rejected):
        atomic_write_text(out_dir / "unfeaturizable.csv", rejected.to_csv(index=False))
    metrics = FoldMetrics(
        dataset=dataset,
        target=target,
        unit=unit,
        model=model_name,
        split=split_kind,
        fold=fold,
        repeat=repeat,
        n_folds=options.n_folds,
        rmse=test_metrics["rmse"],
        mae=test_metrics["mae"],
        r2=test_metrics["r2"],
        valid_rmse=result.best_valid_rmse,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        stopped_early=result.stopped_early,
        n_train=len(datasets["train"]),
        n_valid=len(datasets["valid"]),
        n_test=len(datasets["test"]),
        n_unfeaturizable=len(rejected),
        seconds=time.perf_counter() - started,
        device=result.device,
        seed=options.seed,
        split_seed=None if split_kind == "scaffold" else options.split_seed(repeat),  # scaffold folds are seed-free
        model_seed=settings.seed,
        hparams=dict(getattr(model, "hparams", hparams)),
        settings=settings.to_dict(),
        pairs_path=str(pairs_path),
        code_commit=code_commit,
        code_dirty=code_dirty,
        target_scale=asdict(result.target_scale),
    )
    payload = asdict(metrics)
    atomic_write_text(out_dir / METRICS_FILE, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    LOG.info("%s: test RMSE %.4g %s at epoch %d (%.0f s)", out_dir, metrics.rmse, unit, metrics.best_epoch, metrics.seconds)
    return payload


def run_protocol(
    pairs_path: str | Path,
    model_name: str,
    split_kind: str,
    results_root: str | Path,
    options: ProtocolOptions,
    repeats: int = 5,
    folds: Sequence[int] | None = None,
    force: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Every fold × repeat of one (table, model, split), resumable; one row of metrics per fold."""
    from tqdm.auto import tqdm

    from pairfactory.graphs import GraphCache

    cache = GraphCache(options.graph_cache)
    table = read_pairs(pairs_path)
    dataset, target = str(table["dataset"].iloc[0]), str(table["target"].iloc[0])
    fold_list = list(range(options.n_folds)) if folds is None else list(folds)
    jobs = [(r, f) for r in range(repeats) for f in fold_list]
    rows = []
    for repeat, fold in tqdm(jobs, desc=f"{dataset}/{target} {model_name} {split_kind}", unit="fold", disable=not progress):
        out_dir = fold_dir(results_root, dataset, target, model_name, split_kind, repeat, fold)
        rows.append(run_fold(pairs_path, model_name, split_kind, fold, repeat, out_dir, options, force=force, table=table, progress=progress, cache=cache))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ CLI


def options_from_config(config: Mapping[str, Any] | None, args: argparse.Namespace | None = None) -> ProtocolOptions:
    """Protocol options: CGIB defaults, then the config's ``seed`` and ``evaluate`` section, then flags."""
    section = dict((config or {}).get("evaluate", {}))
    values: dict[str, Any] = {}
    if config is not None:
        # config key -> TrainSettings field (the schema's names)
        for key, name in (("epochs", "max_epochs"), ("batch_size", "batch_size"), ("learning_rate", "lr"),
                          ("weight_decay", "weight_decay"), ("patience", "patience"), ("device", "device"),
                          ("threads", "num_threads"), ("standardize_targets", "standardize_targets")):
            if key in section:
                values[name] = section[key]
        if "patience" in section and section["patience"] is None:  # null = never stop early
            values["patience"] = section.get("epochs", TrainSettings.max_epochs)
    hparams: dict[str, Any] = {}
    if section.get("hidden_dim") is not None:  # null = the model's published default
        hparams["hidden_dim"] = int(section["hidden_dim"])
    model_hparams = {name: dict(values) for name, values in (section.get("model_hparams") or {}).items()}
    n_folds = int(section.get("folds", 5))
    seed = int((config or {}).get("seed", 0))
    if args is not None:
        for flag, name in (("epochs", "max_epochs"), ("batch_size", "batch_size"), ("lr", "lr"),
                           ("weight_decay", "weight_decay"), ("patience", "patience"), ("lr_factor", "lr_factor"),
                           ("lr_patience", "lr_patience"), ("device", "device"), ("threads", "num_threads"),
                           ("standardize_targets", "standardize_targets")):
            if getattr(args, flag, None) is not None:
                values[name] = getattr(args, flag)
        if args.hidden_dim is not None:
            hparams["hidden_dim"] = args.hidden_dim
        if args.hparams:
            try:
                extra = json.loads(args.hparams)
            except json.JSONDecodeError as err:
                raise UserError(f"--hparams must be a JSON object, e.g. '{{\"hidden_dim\": 52}}' ({err})") from err
            if not isinstance(extra, dict):
                raise UserError("--hparams must be a JSON object, e.g. '{\"hidden_dim\": 52}'")
            # the flag is about the model this call runs, so it wins over the config's model_hparams
            model_hparams.setdefault(args.model, {}).update(extra)
        if args.folds is not None:
            n_folds = args.folds
        if args.seed is not None:
            seed = args.seed
    graph_cache = Path(args.graph_cache) if args is not None and args.graph_cache else DEFAULT_GRAPH_CACHE
    return ProtocolOptions(settings=TrainSettings.from_mapping(values), n_folds=n_folds, seed=seed, hparams=hparams,
                           model_hparams=model_hparams, graph_cache=graph_cache)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--pairs", required=True, help="pair table (results/pairs/<dataset>/<target>.parquet)")
    parser.add_argument("--model", required=True, choices=MODEL_NAMES)
    parser.add_argument("--split", default="random", choices=SPLIT_KINDS, help="fold kind (default random, as CGIB)")
    parser.add_argument("--fold", type=int, default=0, help="which fold, 0-based (default 0)")
    parser.add_argument("--repeat", type=int, default=0, help="which repeat, 0-based; changes the seeds (default 0)")
    parser.add_argument("--out", required=True, help="output folder for this fold")
    parser.add_argument("--config", help="config.yaml; hyper-parameters from its `evaluate` section, seed from `seed`")
    parser.add_argument("--folds", type=int, help="k of k-fold (default 5 or config evaluate.folds)")
    parser.add_argument("--epochs", type=int, help="maximum epochs (CGIB: 500)")
    parser.add_argument("--batch-size", type=int, help="training batch size (CGIB: 256)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (CGIB: 1e-3)")
    parser.add_argument("--weight-decay", type=float, help="Adam weight decay (CGIB: 0)")
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs (CGIB: 50)")
    parser.add_argument("--lr-factor", type=float, help="ReduceLROnPlateau factor (default 0.1)")
    parser.add_argument("--lr-patience", type=int, help="ReduceLROnPlateau patience (CGIB: 20)")
    parser.add_argument("--standardize-targets", action="store_true", default=None,
                        help="train on targets standardized with the training set's mean and std (not in CGIB's protocol)")
    parser.add_argument("--hidden-dim", type=int, help="model hidden size (passed to models.build_model)")
    parser.add_argument("--hparams", help="hyper-parameters of --model as a JSON object, e.g. '{\"beta\": 0.01}' "
                        "(over the config's evaluate.model_hparams; names: pairfactory.models.default_hparams)")
    parser.add_argument("--seed", type=int, help="master seed (default: config `seed`, else 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: CUDA when usable")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    parser.add_argument("--graph-cache", help=f"graph cache location (default {DEFAULT_GRAPH_CACHE})")
    parser.add_argument("--force", action="store_true", help="rerun even if metrics.json exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def run(args: argparse.Namespace) -> int:
    config = None
    if args.config:
        from pairfactory.config import load_config

        config = load_config(args.config)
    options = options_from_config(config, args)
    metrics = run_fold(
        args.pairs, args.model, args.split, args.fold, args.repeat, args.out, options,
        force=args.force, progress=not args.no_progress,
    )
    print(json.dumps({k: metrics[k] for k in ("dataset", "target", "model", "split", "repeat", "fold", "rmse", "mae", "r2", "best_epoch")}))
    return 0
