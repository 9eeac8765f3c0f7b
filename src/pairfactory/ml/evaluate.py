"""Train and evaluate one model on one fold of a pair table (the CGIB cross-validation protocol).

One call = one (table, model, split, repeat, fold). It writes, into the fold's folder:
``metrics.json`` (test RMSE/MAE/R² at the best-validation epoch, sizes, timing, settings, seeds),
``predictions.parquet`` (pair_id, role, y_true, y_pred for train/valid/test with the best weights,
and solute_similarity: the Tanimoto similarity of the solute to its nearest training solute; a
probabilistic model adds ``y_std``, calibrated on the validation set and grown with the solute's
novelty, and its own ``y_std_uncalibrated``),
``history.csv`` (the learning curve) and ``model.pt`` (weights only). ``metrics.json`` is written
last, so its presence marks a finished fold: a rerun skips it unless ``--force``.

Seeds: the split of repeat ``r`` uses ``seed + r`` (random and solute splits; the scaffold split is
seed-free), and the model of repeat ``r`` is initialised and shuffled with ``seed + r`` (CGIB seeds
repeat ``r`` with ``r``). The settings arrive typed, as ``ProtocolOptions``:
``pairfactory.cli.evaluate`` builds them from the config and the flags.
"""

from __future__ import annotations

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
from pairfactory.fileio import atomic_write, atomic_write_text, file_sha256
from pairfactory.ml.applicability import nearest_training_similarity
from pairfactory.ml.datasets import PairGraphDataset, PairSupervision
from pairfactory.ml.extra_pairs import (
    DECISIONS_FILE,
    ExtraPairSettings,
    ExtraTraining,
    checked_extra_table,
    select_extra_training,
    with_extra_training,
)
from pairfactory.ml.graph_cache import DEFAULT_GRAPH_CACHE, GraphCache
from pairfactory.ml.models import MODEL_NAMES, build_model, default_hparams
from pairfactory.ml.models.registry import model_input_names, model_spec
from pairfactory.ml.sample_sets import (
    SampleSetSettings,
    descriptor_inputs,
    descriptor_table_solvents,
    fold_samples,
    read_descriptors,
    require_every_solvent,
)
from pairfactory.ml.splits import SPLIT_KINDS, FoldSplit, make_splits
from pairfactory.ml.train import (
    TrainResult,
    TrainSettings,
    regression_metrics,
    save_weights,
    seed_everything,
    train_model,
    tunable_train_settings,
)
from pairfactory.ml.tune import read_fold_metrics
from pairfactory.ml.uncertainty import calibrate_predictions
from pairfactory.pairs.smiles import molecule_key

log = logging.getLogger(__name__)
METRICS_FILE, PREDICTIONS_FILE, HISTORY_FILE, WEIGHTS_FILE = (
    "metrics.json",
    "predictions.parquet",
    "history.csv",
    "model.pt",
)
PAIR_COLUMNS = ("pair_id", "dataset", "target", "solute_smiles", "solvent_smiles", "value", "unit")


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
    # The QM samples of the table's dataset (one engine tag's shard folder) and a per-system
    # descriptor table: coverage is reported for every model, supervision built for models that
    # learn from samples, from training pairs only.
    shards_dir: Path | None = None
    descriptors: Path | None = None
    samples: SampleSetSettings = field(default_factory=SampleSetSettings)
    # members per fold, trained with model seeds seed + r, + r + ENSEMBLE_SEED_STEP, ...: their
    # mean is the prediction and their spread a σ (member 0 is the single model of the fold)
    ensemble: int = 1
    # labelled pairs of another table added to each fold's training role (never to validation
    # or test), minus the fold's held-out molecules (ml.extra_pairs)
    extra_pairs: ExtraPairSettings | None = None

    def __post_init__(self) -> None:
        if self.ensemble < 1:
            raise UserError(f"ensemble must be >= 1 (got {self.ensemble})")
        if self.extra_descriptors is not None and self.descriptors is None:
            raise UserError(
                "--extra-descriptors is read together with the table's own descriptor table: "
                "give --descriptors too"
            )

    def hparams_for(self, model_name: str) -> dict[str, Any]:
        """The hyper-parameters a fold of ``model_name`` is built with: the shared ones, then the
        model's own. The shared ``hidden_dim`` goes only to models that have one (AttentiveFP
        sizes its layers with ``graph_feat_size``); every other key is passed on, so a typo still
        fails."""
        given = dict(self.hparams)
        if "hidden_dim" in given and "hidden_dim" not in default_hparams(model_name):
            log.info(
                "model %s has no hidden_dim; ignoring hidden_dim=%s",
                model_name,
                given.pop("hidden_dim"),
            )
        training = tunable_train_settings()
        given.update(
            {k: v for k, v in self.model_hparams.get(model_name, {}).items() if k not in training}
        )
        return given

    def reads_descriptors(self, model_name: str) -> bool:
        """Whether a fold of ``model_name`` reads the descriptor table: as an input, or as the
        auxiliary targets of a model that learns from the samples (given shards)."""
        if self.descriptors is None:
            return False
        learns_from_samples = self.shards_dir is not None and model_spec(model_name).uses_samples
        return learns_from_samples or bool(
            model_input_names(model_name, self.hparams_for(model_name))
        )

    def settings_for(self, model_name: str) -> TrainSettings:
        """The training settings of ``model_name``: the shared ones, with the training keys of its
        ``model_hparams`` over them (``{probpair: {lr: 0.0003}}``: batch size and learning rate
        chosen per model on validation, with one budget for every model)."""
        training = tunable_train_settings()
        own = {k: v for k, v in self.model_hparams.get(model_name, {}).items() if k in training}
        return TrainSettings.from_mapping(self.settings.to_dict() | own) if own else self.settings

    @property
    def extra_descriptors(self) -> Path | None:
        """The extra pairs' own descriptor table, read together with ``descriptors``."""
        return None if self.extra_pairs is None else self.extra_pairs.descriptors

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
    n_unfeaturizable: (
        int  # rows of the fold dropped by featurization (listed in unfeaturizable.csv)
    )
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
    # model output = (y - mean) / std: model.pt predicts in these units (identity unless
    # standardized)
    target_scale: dict[str, float] | None = None
    # Test-set uncertainty of a probabilistic model (None for point predictions and old folds),
    # with y_std calibrated by sigma_scale and novelty_sigma, fitted on the validation set
    # (ml.uncertainty).
    nll: float | None = None  # mean Gaussian NLL, nats per pair, in target units
    miscalibration_area: float | None = None
    coverage_68: float | None = None
    coverage_95: float | None = None
    spearman_abs_error_std: float | None = None
    # With samples (ProtocolOptions.shards_dir): the fold's sample-set counts, and the test RMSE
    # of the pairs with and without samples.
    samples: dict[str, Any] | None = None
    # A model that reads per-pair inputs (PairModel.input_names): their names, the descriptor
    # table and the pairs of each role without a value.
    inputs: dict[str, Any] | None = None
    n_test_covered: int | None = None
    rmse_test_covered: float | None = None
    rmse_test_uncovered: float | None = None
    sigma_scale: float | None = None
    # σ added at novelty 1 (a solute unlike every training solute), in target units; None for
    # folds from before it existed
    novelty_sigma: float | None = None
    # An ensemble fold (ProtocolOptions.ensemble > 1): members, each member's test RMSE and best
    # epoch (best_epoch and epochs_run above are member 0's, as history.csv is)
    ensemble: int = 1
    member_rmse: list[float] | None = None
    member_best_epoch: list[int] | None = None
    # Extra training pairs (ProtocolOptions.extra_pairs): the table, the holdout rule, rows in,
    # used (in n_train) and the count of each reason a row was not used
    extra_pairs: dict[str, Any] | None = None


@functools.lru_cache(maxsize=1)
def code_state() -> tuple[str | None, bool | None]:
    """(HEAD commit, whether src/ has uncommitted changes): which model code produced a fold.
    Taken once per process (cached), because the code a process runs is the code it imported."""
    import subprocess

    src = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", str(src)],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
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
        raise InputFileError(
            path,
            f"missing column(s) {', '.join(missing)}; "
            "is this a pair table from `pairfactory pairs`?",
        )
    if table.empty:
        raise InputFileError(path, "pair table has no rows")
    for column in ("dataset", "target", "unit"):
        values = table[column].dropna().unique()
        if len(values) != 1:
            raise InputFileError(
                path, f"column {column!r} must hold one value, found {list(values)[:5]}"
            )
    if not np.all(np.isfinite(table["value"].to_numpy(dtype=np.float64))):
        raise InputFileError(
            path,
            "column 'value' holds non-finite numbers; the pairs stage should have rejected them",
        )
    if table["pair_id"].duplicated().any():
        raise InputFileError(path, "pair_id is not unique")
    return table.reset_index(drop=True)


def _warn_without_decoys(model_name: str, hparams: Mapping[str, Any], summary: dict) -> None:
    """A contrastive term with complexes but no decoys scores nothing: say so."""
    weight = {**default_hparams(model_name), **hparams}.get("contrastive_weight", 0.0)
    if not (weight and summary["train_complexes"] > 0 and summary["train_decoys"] == 0):
        return
    per_sample = summary["settings"]["decoys_per_sample"]
    why = (
        "evaluate.samples.decoys_per_sample is 0; set it >= 1"
        if per_sample == 0
        else f"none of the {summary['train_decoys_requested']} requested could be placed (see "
        "the warning above)"
    )
    log.warning(
        "%s: contrastive_weight is %s but there is no decoy (%s) or set contrastive_weight: 0; "
        "the contrastive term is 0",
        model_name,
        weight,
        why,
    )


def load_fold_metrics(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / METRICS_FILE
    if not path.is_file():
        return None
    return read_fold_metrics(path)


def fold_dir(
    root: str | Path, dataset: str, target: str, model: str, split: str, repeat: int, fold: int
) -> Path:
    """``<root>/<dataset>/<target>/<model>/<split>/r<repeat>-f<fold>``: the layout the report
    reads."""
    return Path(root) / dataset / target / model / split / f"r{repeat}-f{fold}"


# ------------------------------------------------------------------------------------- protocol


def _datasets_for_fold(
    table: pd.DataFrame,
    split: FoldSplit,
    cache: GraphCache,
    supervision: Mapping[str, PairSupervision] | None = None,
    inputs: np.ndarray | None = None,
) -> tuple[dict[str, PairGraphDataset], pd.DataFrame]:
    """One PairGraphDataset per role, and the rows featurization could not use (with the reason).
    Only the training role gets ``supervision``: no validation or test sample reaches a loss.
    ``inputs`` (one row per table row) are what the model reads at inference too: every role
    gets its own rows."""
    datasets: dict[str, PairGraphDataset] = {}
    dropped = []
    for role, rows in (("train", split.train), ("valid", split.valid), ("test", split.test)):
        part = table.iloc[rows].reset_index(drop=True)
        ds = PairGraphDataset(
            part,
            cache,
            supervision=supervision if role == "train" else None,
            inputs=None if inputs is None else inputs[rows],
        )
        rejected = _rejections(ds)
        if len(ds) + len(rejected) != len(part):
            raise AssertionError(
                f"{role}: {len(part)} rows in, {len(ds)} kept + {len(rejected)} rejected"
            )
        if len(rejected):
            dropped.append(rejected.assign(role=role))
        datasets[role] = ds
    cache.save()  # atomic; later folds and jobs reuse the graphs
    rejected_all = (
        pd.concat(dropped, ignore_index=True)
        if dropped
        else pd.DataFrame(columns=["pair_id", "reason", "role"])
    )
    return datasets, rejected_all


def model_inputs(
    model_name: str,
    hparams: Mapping[str, Any],
    table: pd.DataFrame,
    descriptors: Path | None,
    extra: ExtraTraining | None = None,
    extra_descriptors: Path | None = None,
) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """The per-pair inputs the model reads (one row per table row) and, for metrics.json, their
    names and source; (None, None) for a model that reads none. ``extra``: the fold's extra
    training pairs (rows of ``table``), which must have a row in the descriptor tables;
    ``extra_descriptors``: their dataset's descriptor table, read together with ``descriptors``."""
    names = model_input_names(model_name, hparams)
    if not names:
        return None, None
    if descriptors is None:
        raise UserError(
            f"{model_name} reads {', '.join(names)} per pair (hyper-parameters {dict(hparams)}); "
            "give the descriptor table (--descriptors, from `pairfactory solvation`)"
        )
    more = () if extra_descriptors is None else (extra_descriptors,)
    frame = read_descriptors(descriptors, *more)
    if extra is not None:
        _require_extra_rows(extra, frame.index, names, descriptors, extra_descriptors)
    inputs = descriptor_inputs(table, frame, names)
    summary: dict[str, Any] = {"names": list(names), "descriptors": str(descriptors)}
    if extra_descriptors is not None:
        summary["extra_descriptors"] = str(extra_descriptors)
    return inputs, summary


@functools.lru_cache(maxsize=2)
def _extra_table(path: Path, inode: int, mtime_ns: int, size: int) -> tuple[pd.DataFrame, str]:
    """The extra table and its sha256, read once per process and file version (a protocol runs
    many folds)."""
    return read_pairs(path), file_sha256(path)


def fold_extra_training(
    table: pd.DataFrame, split: FoldSplit, settings: ExtraPairSettings, by_scaffold: bool = False
) -> ExtraTraining:
    """Which rows of the extra table join this fold's training pairs (``ml.extra_pairs``); its
    summary records the table's content hash (a final model retrains when the table changes)."""
    path = Path(settings.path)
    if not path.is_file():
        raise InputFileError(path, "extra pair table not found; build it with `pairfactory pairs`")
    stat = path.stat()
    extra, sha256 = _extra_table(path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    chosen = select_extra_training(
        checked_extra_table(extra, table, path), table, split, settings, by_scaffold=by_scaffold
    )
    chosen.summary["sha256"] = sha256
    if settings.descriptors is not None:  # its values change what the model learns
        if not Path(settings.descriptors).is_file():
            raise InputFileError(
                settings.descriptors,
                "descriptor table of the extra pairs not found; build it with `pairfactory "
                f"solvation --dataset {chosen.summary['dataset']}`",
            )
        chosen.summary["descriptors_sha256"] = file_sha256(settings.descriptors)
    log.info(
        "extra pairs from %s (holdout %s%s): %d of %d rows join the training pairs; not used: %s",
        path,
        settings.holdout,
        f", solvents {', '.join(settings.solvents)}" if settings.solvents else "",
        chosen.summary["n_used"],
        chosen.summary["n_in"],
        {k: v for k, v in chosen.summary["not_used"].items() if v},
    )
    return chosen


def _require_extra_rows(
    extra: ExtraTraining,
    known: pd.Index,
    names: Sequence[str],
    descriptors: Path,
    extra_descriptors: Path | None,
) -> None:
    """A model that reads per-pair inputs must find the extra training pairs in its descriptor
    tables (their system ids ``known``): otherwise it would learn from hundreds of pairs whose
    value reads as missing while its test pairs have one. A row without a value (an
    unparametrized solvent, a failed run) is read as missing, as for the table's own pairs."""
    if extra.rows.empty:
        return
    from pairfactory.qm.shards import system_id_for

    missing = [
        (a, b)
        for a, b in zip(extra.rows["solute_smiles"], extra.rows["solvent_smiles"], strict=True)
        if system_id_for(a, b) not in known
    ]
    absent = len(missing)
    if absent:
        searched = ", ".join(str(p) for p in (descriptors, extra_descriptors) if p is not None)
        dataset = extra.summary["dataset"]
        built_for = (
            [] if extra_descriptors is None else descriptor_table_solvents(extra_descriptors)
        )
        kept = {molecule_key(s) for s in built_for}
        outside = sorted({b for _, b in missing if molecule_key(b) not in kept}) if kept else []
        if extra_descriptors is None:
            remedy = (
                f"compute them (`pairfactory solvation --dataset {dataset} --out PATH`) and give "
                "that table with --extra-descriptors PATH"
            )
        elif outside:
            remedy = (
                f"{extra_descriptors} holds only the systems in solvent(s) "
                f"{', '.join(built_for)} (`pairfactory solvation --solvent`), and extra pairs "
                f"are in {', '.join(outside[:5])}: rebuild it for the extra pairs' solvents "
                f"(`pairfactory solvation --dataset {dataset}` with one --solvent per "
                "--extra-solvent, or none)"
            )
        else:
            remedy = (
                f"{extra_descriptors} looks older than the extra pair table: rebuild it "
                f"(`pairfactory solvation --dataset {dataset}`; in the workflow "
                f"`snakemake --forcerun {extra_descriptors}`)"
            )
        raise UserError(
            f"{absent} of the {len(extra.rows)} extra training pairs have no row in the descriptor "
            f"table(s) {searched}, so the model would read their {', '.join(names)} as missing; "
            f"{remedy}"
        )


def _rejections(ds: Any) -> pd.DataFrame:
    """The dataset's report of unfeaturizable pairs as a frame with pair_id and reason."""
    rejected = getattr(ds, "rejected", None)
    if rejected is None:
        return pd.DataFrame(columns=["pair_id", "reason"])
    if isinstance(rejected, pd.DataFrame):
        return rejected.reset_index(drop=True)
    return pd.DataFrame(
        [asdict(r) if hasattr(r, "__dataclass_fields__") else dict(r) for r in rejected]
    )


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
    cache: GraphCache | None = None,
) -> dict[str, Any]:
    """Run one fold end to end and write its four files; return the metrics (also when skipped)."""
    out_dir = Path(out_dir)
    if model_name not in MODEL_NAMES:
        raise UserError(f"unknown model {model_name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if split_kind not in SPLIT_KINDS:
        raise UserError(f"unknown split {split_kind!r}; choose one of {', '.join(SPLIT_KINDS)}")
    if not 0 <= fold < options.n_folds:
        raise UserError(
            f"--fold must be in 0..{options.n_folds - 1} for {options.n_folds}-fold "
            f"cross-validation (got {fold})"
        )
    if repeat < 0:
        raise UserError(f"--repeat must be >= 0 (got {repeat})")
    existing = load_fold_metrics(out_dir)
    if existing is not None and not force:
        log.info(
            "%s: already finished (metrics.json exists), skipping; use --force to rerun", out_dir
        )
        return existing

    started = time.perf_counter()
    code_commit, code_dirty = code_state()
    table = read_pairs(pairs_path) if table is None else table
    dataset, target, unit = (str(table[c].iloc[0]) for c in ("dataset", "target", "unit"))
    split = make_splits(
        split_kind,
        table["solute_smiles"].tolist(),
        n_folds=options.n_folds,
        seed=options.split_seed(repeat),
    )[fold]
    if options.reads_descriptors(model_name):
        require_every_solvent(options.descriptors, table)
    extra = None
    if options.extra_pairs is not None:
        extra = fold_extra_training(
            table, split, options.extra_pairs, by_scaffold=split_kind == "scaffold"
        )
        table, split = with_extra_training(table, split, extra.rows)
    if cache is None:
        cache = GraphCache(options.graph_cache)
    hparams = options.hparams_for(model_name)
    samples = None
    if options.shards_dir is None and model_spec(model_name).uses_samples:
        log.warning(
            "%s learns from QM samples, but no shards were given: it trains as its 2D-only twin "
            "(reported as %s@samples=false); pass --shards-dir (and --descriptors) to use them",
            model_name,
            model_name,
        )
    if options.shards_dir is not None:
        samples = fold_samples(
            table,
            split.train,
            options.shards_dir,
            cache,
            options.samples,
            options.descriptors,
            with_supervision=model_spec(model_name).uses_samples,
            extra_descriptors_path=options.extra_descriptors,
        )
        _warn_without_decoys(model_name, hparams, samples.summary)
    inputs, input_summary = model_inputs(
        model_name, hparams, table, options.descriptors, extra, options.extra_descriptors
    )
    datasets, rejected = _datasets_for_fold(
        table, split, cache, None if samples is None else samples.supervision, inputs
    )
    if input_summary is not None:  # of the pairs each role keeps (featurized)
        input_summary["missing"] = {
            role: sum(bool(np.isnan(item.inputs).any()) for item in ds.items)
            for role, ds in datasets.items()
        }
        log.info("pairs without a value of %s: %s", ", ".join(input_summary["names"]),
                 input_summary["missing"])  # fmt: skip
    log.info(
        "%s/%s %s %s r%d f%d: train %d, valid %d, test %d pairs (%d unfeaturizable)",
        dataset,
        target,
        model_name,
        split_kind,
        repeat,
        fold,
        len(datasets["train"]),
        len(datasets["valid"]),
        len(datasets["test"]),
        len(rejected),
    )

    members = []
    for member in range(options.ensemble):
        settings = replace(
            options.settings_for(model_name),
            seed=options.model_seed(repeat) + member * ENSEMBLE_SEED_STEP,
        )
        seed_everything(settings.seed)  # before building: initial weights depend on the seed
        model = build_model(model_name, **hparams)
        members.append(
            train_model(
                model,
                datasets["train"],
                datasets["valid"],
                datasets["test"],
                settings,
                logger=log,
                progress=progress,
            )
        )
    result = members[0] if len(members) == 1 else _ensemble_result(members)
    settings = replace(options.settings_for(model_name), seed=options.model_seed(repeat))

    frames = []
    for role, part in result.predictions.groupby("role", sort=False):
        ids = _pair_ids_of(datasets[role], part["index"].to_numpy())
        solutes = datasets[role].pairs_df["solute_smiles"].to_numpy(dtype=object)
        frames.append(
            pd.DataFrame(
                {
                    "pair_id": ids,
                    "role": role,
                    "solute_smiles": solutes[part["index"].to_numpy().astype(np.int64)],
                    "y_true": part["y_true"].to_numpy(),
                    "y_pred": part["y_pred"].to_numpy(),
                    # a probabilistic model's predictive standard deviation
                    **({"y_std": part["y_std"].to_numpy()} if "y_std" in part else {}),
                }
            )
        )
    predictions = pd.concat(frames, ignore_index=True)
    # how far each solute lies from the solutes the model was fitted to: σ grows with it
    # (ml.uncertainty), and compare_folds groups by it
    train_solutes = predictions.loc[predictions["role"] == "train", "solute_smiles"]
    predictions["solute_similarity"] = nearest_training_similarity(
        predictions["solute_smiles"].tolist(), train_solutes
    )
    predictions = predictions.drop(columns="solute_smiles")
    uncertainty: dict[str, float] = {}
    if "y_std" in predictions:  # calibrate σ on the validation set; keep the model's own σ too
        predictions, uncertainty = calibrate_predictions(predictions)
    coverage: dict[str, Any] = {}
    if samples is not None:  # which pairs have QM samples, and the test error of each group
        predictions["covered"] = predictions["pair_id"].map(samples.covered).astype(bool)
        coverage = _coverage_metrics(predictions, samples.summary)
    test = predictions[predictions["role"] == "test"]
    test_metrics = regression_metrics(test["y_true"].to_numpy(), test["y_pred"].to_numpy())
    # The best-weights re-evaluation must give the test RMSE recorded at the best epoch.
    if not np.isclose(test_metrics["rmse"], result.test_rmse, rtol=1e-4, atol=1e-6):
        raise AssertionError(
            f"test RMSE {test_metrics['rmse']} != {result.test_rmse} recorded at the best epoch"
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / PREDICTIONS_FILE, lambda tmp: predictions.to_parquet(tmp, index=False))
    history = result.history_frame()
    atomic_write_text(out_dir / HISTORY_FILE, history.to_csv(index=False))
    save_weights(members[0].best_state_dict, out_dir / WEIGHTS_FILE)
    for member, member_result in enumerate(members[1:], start=1):
        save_weights(member_result.best_state_dict, out_dir / f"model-m{member}.pt")
    if len(rejected):
        atomic_write_text(out_dir / "unfeaturizable.csv", rejected.to_csv(index=False))
    if extra is not None:
        atomic_write_text(out_dir / DECISIONS_FILE, extra.decisions.to_csv(index=False))
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
        split_seed=None
        if split_kind == "scaffold"
        else options.split_seed(repeat),  # scaffold folds are seed-free
        model_seed=settings.seed,
        hparams=dict(getattr(model, "hparams", hparams)),
        settings=settings.to_dict(),
        pairs_path=str(pairs_path),
        code_commit=code_commit,
        code_dirty=code_dirty,
        target_scale=asdict(result.target_scale),
        ensemble=options.ensemble,
        member_rmse=[m.test_rmse for m in members] if len(members) > 1 else None,
        member_best_epoch=[m.best_epoch for m in members] if len(members) > 1 else None,
        inputs=input_summary,
        extra_pairs=None if extra is None else extra.summary,
        **uncertainty,
        **coverage,
    )
    payload = asdict(metrics)
    atomic_write_text(out_dir / METRICS_FILE, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    log.info(
        "%s: test RMSE %.4g %s at epoch %d (%.0f s)",
        out_dir,
        metrics.rmse,
        unit,
        metrics.best_epoch,
        metrics.seconds,
    )
    return payload


ENSEMBLE_SEED_STEP = 1000  # member i's model seed: seed + repeat + i * 1000 (no clash with repeats)


def _ensemble_result(members: list[TrainResult]) -> TrainResult:
    """Members' best-epoch predictions combined like a final model's (mean; σ from the members'
    own σ and their spread), as one TrainResult whose test RMSE is the ensemble's."""
    from pairfactory.ml.predictor import combine_members, predictive_sigma

    first = members[0].predictions
    for other in members[1:]:
        same = other.predictions[["role", "index"]].reset_index(drop=True)
        if not same.equals(first[["role", "index"]].reset_index(drop=True)):
            raise AssertionError("ensemble members predicted the pairs in different orders")
    means = np.stack([m.predictions["y_pred"].to_numpy() for m in members])
    stds = (
        np.stack([m.predictions["y_std"].to_numpy() for m in members])
        if all("y_std" in m.predictions for m in members)
        else None
    )
    combined = combine_members(means, stds)
    predictions = first[["role", "index", "y_true"]].copy()
    predictions["y_pred"] = combined["y_pred"]
    predictions["y_std"] = predictive_sigma(combined)
    test = predictions[predictions["role"] == "test"]
    valid = predictions[predictions["role"] == "valid"]
    test_m = regression_metrics(test["y_true"].to_numpy(), test["y_pred"].to_numpy())
    valid_m = regression_metrics(valid["y_true"].to_numpy(), valid["y_pred"].to_numpy())
    return replace(
        members[0],
        # best_epoch and the history stay member 0's, as history.csv is (a mean best epoch could
        # exceed member 0's epochs run)
        best_valid_rmse=valid_m["rmse"],
        test_rmse=test_m["rmse"],
        test_mae=test_m["mae"],
        predictions=predictions,
        seconds=sum(m.seconds for m in members),
        stopped_early=all(m.stopped_early for m in members),
    )


def _coverage_metrics(predictions: pd.DataFrame, summary: dict[str, Any]) -> dict[str, Any]:
    test = predictions[predictions["role"] == "test"]
    out: dict[str, Any] = {"samples": summary, "n_test_covered": int(test["covered"].sum())}
    for name, part in (("covered", test[test["covered"]]), ("uncovered", test[~test["covered"]])):
        rmse = (
            regression_metrics(part["y_true"].to_numpy(), part["y_pred"].to_numpy())["rmse"]
            if len(part)
            else None
        )
        out[f"rmse_test_{name}"] = rmse
    return out


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

    cache = GraphCache(options.graph_cache)
    table = read_pairs(pairs_path)
    dataset, target = str(table["dataset"].iloc[0]), str(table["target"].iloc[0])
    fold_list = list(range(options.n_folds)) if folds is None else list(folds)
    jobs = [(r, f) for r in range(repeats) for f in fold_list]
    rows = []
    for repeat, fold in tqdm(
        jobs,
        desc=f"{dataset}/{target} {model_name} {split_kind}",
        unit="fold",
        disable=not progress,
    ):
        out_dir = fold_dir(results_root, dataset, target, model_name, split_kind, repeat, fold)
        rows.append(
            run_fold(
                pairs_path,
                model_name,
                split_kind,
                fold,
                repeat,
                out_dir,
                options,
                force=force,
                table=table,
                progress=progress,
                cache=cache,
            )
        )
    return pd.DataFrame(rows)
