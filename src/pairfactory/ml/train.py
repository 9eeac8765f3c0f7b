"""The training loop of the evaluation protocol (CGIB defaults), metrics and weights-only
checkpoints.

Protocol, as in the CGIB molecular-interaction script (Lee et al., ICML 2023,
``MolecularInteraction/``): Adam (lr 1e-3, no weight decay), batch size 256, ``ReduceLROnPlateau``
on the validation MSE (factor 0.1, patience 20), early stopping once the best validation loss has
not improved for 50 epochs, at most 500 epochs; the number reported for a fold is the **test RMSE
at the epoch with the best validation loss**. Every epoch evaluates validation and test, so the
learning curve is complete.

Heavy imports (torch, dgl, pandas) stay inside functions: the CLI reads ``DEVICES`` from here
to build its parser.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write
from pairfactory.ml.checkpoint import (
    TrainingState,
    capture_rng,
    load_training_state,
    restore_rng,
    save_training_state,
)
from pairfactory.ml.datasets import collate_pairs

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd
    import torch

    from pairfactory.ml.models.layers import PairModel

log = logging.getLogger(__name__)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class TrainingError(UserError):
    """Training cannot go on (the loss diverged, a split is empty)."""


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings; defaults are CGIB's (``MolecularInteraction/argument.py``, README)."""

    lr: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 500
    patience: int = 50  # early stopping: epochs without a better validation loss
    lr_factor: float = 0.1  # ReduceLROnPlateau factor (torch default, as in CGIB)
    lr_patience: int = 20  # ReduceLROnPlateau patience
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when torch and DGL can use it), "cpu" or "cuda"
    num_threads: int = 1  # torch intra-op threads on CPU; 0 keeps torch's default
    eval_batch_size: int = 1024  # evaluation only: larger batches, same numbers
    # Train on (y - mean) / std of the training set and map predictions back. Off in CGIB's
    # protocol, which fits raw targets; for targets far from zero (absorption maxima around 430 nm)
    # raw fitting spends its first epochs learning the offset, and ReduceLROnPlateau can cut the
    # rate meanwhile.
    standardize_targets: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number (got {self.lr})")
        for name in ("batch_size", "max_epochs", "patience", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if not 0.0 < self.lr_factor < 1.0:
            problems.append(f"lr_factor must be in (0, 1) (got {self.lr_factor})")
        if self.lr_patience < 0 or self.weight_decay < 0 or self.num_threads < 0:
            problems.append("lr_patience, weight_decay and num_threads must be >= 0")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {', '.join(DEVICES)} (got {self.device!r})")
        if problems:
            raise UserError("invalid training settings: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainSettings:
        """Build from a mapping of setting names, ignoring keys that are not settings (the caller
        checks those)."""
        names = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in names and value is not None:
                kwargs[key] = _setting_value(key, getattr(cls, key), value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EpochRecord:
    """One row of the learning curve."""

    epoch: int
    train_loss: float  # mean over training pairs of MSE + the model's auxiliary loss
    valid_rmse: float
    test_rmse: float
    valid_mae: float
    test_mae: float
    lr: float  # learning rate used during this epoch
    seconds: float  # wall time of the epoch (train + evaluation)
    # the model's named loss terms (ProbPair: main, contact, contrastive, aux, kl), each the mean
    # over training pairs; they sum to train_loss. Empty for a model without named terms.
    loss_terms: dict[str, float] = field(default_factory=dict)


def _setting_value(name: str, default: Any, value: Any) -> Any:
    """``value`` as the type of the setting's default, or a UserError naming the setting."""
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool):  # a bool is an int to Python, never a number to a user
        raise UserError(f"{name} must be of type {kind.__name__}, got {value!r}")
    try:
        converted = kind(value)
        if kind is int and converted != float(value):
            raise UserError(f"{name} must be a whole number, got {value!r}")
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be of type {kind.__name__}, got {value!r}") from None
    return converted


def recorded_setting(name: str, value: Any) -> Any:
    """A training setting as a fold recorded it, as the setting's type where it is one of
    ``TrainSettings`` and valid (else as recorded): for comparing folds written by versions that
    recorded ``0`` and ``0.0`` alike."""
    if name not in {f.name for f in fields(TrainSettings)} or value is None:
        return value
    try:
        return _setting_value(name, getattr(TrainSettings, name), value)
    except UserError:
        return value


def tunable_train_settings() -> frozenset[str]:
    """The TrainSettings a model may set for itself (``evaluate.model_hparams``, a
    hyper-parameter grid): everything but the seed and where it runs."""
    return frozenset(f.name for f in fields(TrainSettings)) - {"seed", "device", "num_threads"}


@dataclass(frozen=True)
class TargetScale:
    """The affine map between targets and what the model is trained to output."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, y: np.ndarray) -> TargetScale:
        y = np.asarray(y, dtype=np.float64)
        std = float(y.std())
        # a constant training target cannot be scaled; keep the unit scale rather than divide by 0
        return cls(mean=float(y.mean()), std=std if std > 0 else 1.0)


@dataclass
class TrainResult:
    best_epoch: int
    best_valid_rmse: float
    test_rmse: float  # at best_epoch
    test_mae: float  # at best_epoch
    history: list[EpochRecord]
    best_state_dict: dict[str, Any] = field(repr=False)
    predictions: pd.DataFrame = field(
        repr=False
    )  # role, index, y_true, y_pred (best-epoch weights)
    seconds: float = 0.0
    device: str = "cpu"
    stopped_early: bool = False
    # the model outputs (y - mean) / std; identity unless settings.standardize_targets
    target_scale: TargetScale = field(default_factory=TargetScale)

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def history_frame(self) -> pd.DataFrame:
        import pandas as pd

        # one column per loss term (loss_main, loss_contact, ...): a table a person can plot
        columns = [f.name for f in fields(EpochRecord) if f.name != "loss_terms"]
        terms = list(dict.fromkeys(name for row in self.history for name in row.loss_terms))
        rows = [
            [getattr(row, c) for c in columns]
            + [row.loss_terms.get(name, math.nan) for name in terms]
            for row in self.history
        ]
        return pd.DataFrame(rows, columns=columns + [f"loss_{name}" for name in terms])


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² (coefficient of determination; NaN when y_true is constant)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(
            f"metrics need two equal, non-empty arrays (got {y_true.shape} and {y_pred.shape})"
        )
    err = y_pred - y_true
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": float(1.0 - np.sum(err**2) / ss_tot) if ss_tot > 0 else float("nan"),
    }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch (CPU and CUDA) and DGL. Call before building the model so that
    its initial weights are reproducible too."""
    import dgl
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    dgl.seed(seed)


def resolve_device(requested: str) -> str:
    """'auto' → 'cuda' when torch sees a GPU *and* this DGL build can move graphs there, else
    'cpu'."""
    import torch

    if requested not in DEVICES:
        raise UserError(f"device must be one of {', '.join(DEVICES)} (got {requested!r})")
    if requested == "cpu":
        return "cpu"
    usable = torch.cuda.is_available() and _dgl_has_cuda()
    if requested == "cuda" and not usable:
        raise UserError(
            "device 'cuda' requested but not usable: torch.cuda.is_available() is "
            f"{torch.cuda.is_available()} and DGL {'can' if _dgl_has_cuda() else 'cannot'} "
            "place graphs on the GPU (the package-index DGL wheel is CPU-only; install the cu121 "
            "build from DGL's wheel repository) — or pass --device cpu"
        )
    return "cuda" if usable else "cpu"


def _dgl_has_cuda() -> bool:
    import dgl
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        dgl.graph(([0], [1])).to("cuda")
    except Exception:  # noqa: BLE001 - any failure means: not usable
        return False
    return True


def train_model(
    model: PairModel,
    train_ds: Any,
    valid_ds: Any,
    test_ds: Any | None,
    settings: TrainSettings,
    logger: logging.Logger | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
) -> TrainResult:
    """Train with early stopping on validation RMSE; report test RMSE at the best-validation epoch.

    ``test_ds`` None (a final model: training and holdout only) leaves the test columns NaN.
    With ``checkpoint``, the whole training state is written every ``checkpoint.every_s`` seconds
    and at the end, and a run that finds a checkpoint resumes from it with the same numbers as an
    uninterrupted run (:mod:`pairfactory.ml.checkpoint`).

    ``*_ds`` are map-style datasets whose items ``collate_fn`` (default
    :func:`pairfactory.ml.datasets.collate_pairs`) batches into an object with ``solute``,
    ``solvent``, ``y``, ``index``, ``inputs`` and ``.to(device)``. The model (a ``PairModel``:
    called through ``forward_batch``) returns
    ``ModelOutput(prediction, aux_loss, aux, variance)``; the loss is the model's ``training_loss``
    (default ``mse(prediction, y) + aux_loss``), which may read the training batch's supervision.
    Returns the best weights (on CPU), the learning curve and the best-epoch predictions for all
    three sets. Epoch lines go to ``logger`` (default: this module's).
    """
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    logger = logger or log
    collate_fn = collate_fn or collate_pairs
    roles = (("train", train_ds), ("valid", valid_ds)) + (
        (("test", test_ds),) if test_ds is not None else ()
    )
    for name, ds in roles:
        if len(ds) == 0:
            raise TrainingError(f"the {name} set is empty; check the split and the pair table")
    if settings.num_threads > 0:
        torch.set_num_threads(settings.num_threads)
    device = resolve_device(settings.device)
    seed_everything(settings.seed)
    model = model.to(device)

    # A dedicated generator makes the shuffle order depend on the seed only.
    shuffle_gen = torch.Generator().manual_seed(settings.seed)
    train_loader = DataLoader(
        train_ds,
        batch_size=settings.batch_size,
        shuffle=True,
        collate_fn=collate_fn,
        generator=shuffle_gen,
    )
    # Evaluation never needs the training pairs' samples: don't batch their 3D graphs.
    eval_collate = (
        functools.partial(collate_pairs, with_supervision=False)
        if collate_fn is collate_pairs
        else collate_fn
    )
    eval_loaders = {
        role: DataLoader(
            ds, batch_size=settings.eval_batch_size, shuffle=False, collate_fn=eval_collate
        )
        for role, ds in roles
    }
    scale = TargetScale()
    if settings.standardize_targets:
        scale = TargetScale.fit(
            np.concatenate([b.y.reshape(-1).numpy() for b in eval_loaders["train"]])
        )
        logger.info(
            "targets standardized with the training set's mean %.4g and std %.4g",
            scale.mean,
            scale.std,
        )
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=settings.lr_factor, patience=settings.lr_patience
    )

    history: list[EpochRecord] = []
    best_valid_mse = math.inf
    best_epoch = 0
    best_state: dict[str, Any] = {}
    stopped_early = False
    first_epoch = 1
    if checkpoint is not None:
        resumed = load_training_state(checkpoint.path, checkpoint.fingerprint)
        if resumed is not None:
            model.load_state_dict(resumed.model)
            optimizer.load_state_dict(resumed.optimizer)
            scheduler.load_state_dict(resumed.scheduler)
            restore_rng(resumed.rng, shuffle_gen)
            history = [EpochRecord(**row) for row in resumed.history]
            best_epoch, best_valid_mse = resumed.best_epoch, resumed.best_valid_mse
            best_state = resumed.best_model
            first_epoch = resumed.epoch + 1
            stopped_early = resumed.epoch - best_epoch >= settings.patience
            logger.info(
                "resumed from %s after epoch %d (best epoch %d)",
                checkpoint.path,
                resumed.epoch,
                best_epoch,
            )
    last_saved = time.monotonic()
    started = time.perf_counter()
    # a run resumed after its early stop has no epoch left to train
    last_epoch = first_epoch - 1 if stopped_early else settings.max_epochs
    bar = tqdm(
        range(first_epoch, last_epoch + 1),
        desc="epochs",
        unit="ep",
        disable=not progress,
        leave=False,
        mininterval=2.0,
    )
    for epoch in bar:
        epoch_start = time.perf_counter()
        lr_now = float(optimizer.param_groups[0]["lr"])
        train_loss, loss_terms = _train_one_epoch(model, train_loader, optimizer, device, scale)
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"training loss became {train_loss} at epoch {epoch} (lr {lr_now:g}); "
                "lower the learning rate (--lr) or check the target values for outliers"
            )
        valid = _predict(model, eval_loaders["valid"], device, scale)
        valid_m = regression_metrics(valid["y_true"], valid["y_pred"])
        test_m = {"rmse": math.nan, "mae": math.nan}
        if test_ds is not None:
            test = _predict(model, eval_loaders["test"], device, scale)
            test_m = regression_metrics(test["y_true"], test["y_pred"])
        valid_mse = valid_m["rmse"] ** 2
        history.append(
            EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                valid_rmse=valid_m["rmse"],
                test_rmse=test_m["rmse"],
                valid_mae=valid_m["mae"],
                test_mae=test_m["mae"],
                lr=lr_now,
                seconds=time.perf_counter() - epoch_start,
                loss_terms=loss_terms,
            )
        )
        if valid_mse < best_valid_mse:  # strict, as in CGIB: ties keep the earlier epoch
            best_valid_mse, best_epoch = valid_mse, epoch
            best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        scheduler.step(valid_mse)
        done = epoch - best_epoch >= settings.patience or epoch == settings.max_epochs
        if checkpoint is not None and (done or time.monotonic() - last_saved >= checkpoint.every_s):
            save_training_state(
                TrainingState(
                    epoch=epoch,
                    model=model.state_dict(),
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                    rng=capture_rng(shuffle_gen),
                    history=[asdict(row) for row in history],
                    best_epoch=best_epoch,
                    best_valid_mse=best_valid_mse,
                    best_model=best_state,
                    fingerprint=checkpoint.fingerprint,
                ),
                checkpoint.path,
            )
            last_saved = time.monotonic()
        bar.set_postfix(loss=f"{train_loss:.3g}", valid=f"{valid_m['rmse']:.3g}", best=best_epoch)
        # a line every 10 epochs: runs in the background (no bar) still show progress
        logger.log(
            logging.INFO if epoch % 10 == 0 else logging.DEBUG,
            "epoch %d/%d: train loss %.4g, valid RMSE %.4g, test RMSE %.4g, lr %.2g, best epoch %d",
            epoch,
            settings.max_epochs,
            train_loss,
            valid_m["rmse"],
            test_m["rmse"],
            lr_now,
            best_epoch,
        )
        if epoch - best_epoch >= settings.patience:
            stopped_early = True
            logger.info(
                "early stop at epoch %d: no better validation loss since epoch %d",
                epoch,
                best_epoch,
            )
            break
    bar.close()
    if not best_state:
        raise TrainingError(
            "no epoch produced a finite validation loss; check the data and the learning rate"
        )

    model.load_state_dict(best_state)
    frames = []
    for role, loader in eval_loaders.items():
        pred = _predict(model, loader, device, scale)
        frames.append(pd.DataFrame({"role": role, **pred})[_prediction_columns(pred)])
    predictions = pd.concat(frames, ignore_index=True)
    best_row = history[best_epoch - 1]
    seconds = time.perf_counter() - started
    logger.info(
        "best epoch %d of %d: valid RMSE %.4g, test RMSE %.4g (%.1f s on %s)",
        best_epoch,
        len(history),
        best_row.valid_rmse,
        best_row.test_rmse,
        seconds,
        device,
    )
    return TrainResult(
        best_epoch=best_epoch,
        best_valid_rmse=best_row.valid_rmse,
        test_rmse=best_row.test_rmse,
        test_mae=best_row.test_mae,
        history=history,
        best_state_dict=best_state,
        predictions=predictions,
        seconds=seconds,
        device=device,
        stopped_early=stopped_early,
        target_scale=scale,
    )


def _train_one_epoch(
    model: PairModel, loader: Any, optimizer: Any, device: str, scale: TargetScale
) -> tuple[float, dict[str, float]]:
    """One pass over the training set: (mean loss per pair, mean of each named loss term)."""
    import torch

    model.train()
    total, count = 0.0, 0
    term_totals: dict[str, float] = {}
    for batch in loader:
        batch = batch.to(device)
        y = (batch.y.to(torch.float32).reshape(-1) - scale.mean) / scale.std
        optimizer.zero_grad()
        out = model.forward_batch(batch)
        loss, terms = model.training_loss(out, batch, y)
        for name, value in terms.items():
            term_totals[name] = term_totals.get(name, 0.0) + value * len(y)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(y)
        count += len(y)
    count = max(count, 1)
    return total / count, {name: value / count for name, value in term_totals.items()}


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often :func:`train_model` saves its state; ``fingerprint`` (JSON-like:
    model, hyper-parameters, settings, data hash) must match for a checkpoint to be resumed."""

    path: Path
    every_s: float = 300.0
    fingerprint: dict[str, Any] = field(default_factory=dict)


def _predict(
    model: PairModel, loader: Any, device: str, scale: TargetScale
) -> dict[str, np.ndarray]:
    import torch

    model.eval()
    preds, stds, ys, idx = [], [], [], []
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            out = model.forward_batch(batch)
            preds.append(
                out.prediction.reshape(-1).to("cpu", torch.float64).numpy() * scale.std + scale.mean
            )
            if getattr(out, "variance", None) is not None:
                variance = out.variance.reshape(-1).to("cpu", torch.float64).numpy()
                stds.append(np.sqrt(variance) * scale.std)
            ys.append(batch.y.reshape(-1).to("cpu", torch.float64).numpy())
            idx.append(np.asarray(_as_numpy(batch.index)).reshape(-1))
    result = {
        "y_pred": np.concatenate(preds),
        "y_true": np.concatenate(ys),
        "index": np.concatenate(idx),
    }
    if stds:  # a probabilistic model: its predictive standard deviation, in target units
        result["y_std"] = np.concatenate(stds)
    return result


def _prediction_columns(pred: Mapping[str, np.ndarray]) -> list[str]:
    return ["role", "index", "y_true", "y_pred"] + (["y_std"] if "y_std" in pred else [])


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().to("cpu").numpy()
    return np.asarray(value)


def save_weights(state_dict: Mapping[str, Any], path: str | Path) -> Path:
    """Write a weights-only checkpoint (tensors only, loadable with ``weights_only=True``),
    atomically."""
    import torch

    path = Path(path)
    tensors = {k: v.detach().to("cpu") for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: torch.save(tensors, tmp))
    return path


def load_weights(model: torch.nn.Module, path: str | Path, strict: bool = True) -> torch.nn.Module:
    """Load a weights-only checkpoint into ``model`` (no pickled code is executed)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for a bad file
        raise UserError(f"checkpoint {path} is not a weights-only torch file: {err}") from err
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        raise UserError(
            f"checkpoint {path} does not fit this model (other model or hyper-parameters): {err}"
        ) from err
    return model
