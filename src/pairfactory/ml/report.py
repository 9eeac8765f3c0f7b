"""Results tables and plots from evaluation outputs (``results/evaluate`` → ``results/report``).

Reads every ``metrics.json`` under ``--results`` (the layout of ``pairfactory evaluate``:
``<dataset>/<target>/<model>/<split>/r<repeat>-f<fold>/``) and writes

- ``results.csv``: one row per (dataset, target, split, model variant: ``cgib`` at the model's
  default hyper-parameters, ``cgib@beta=0.0001`` otherwise, so that differently trained folds
  never mix): number of folds, mean and standard deviation of the test RMSE over folds × repeats,
  the CGIB-style standard deviation over the repeats' fold means, MAE, R², epochs, time, and the
  published RMSE where the CGIB paper has one;
- ``results.md``: the same as a Markdown table, published numbers and the project's targets side
  by side;
- ``plots/<dataset>/<target>/<split>/<model>_parity.png`` (test predictions of every fold),
  ``..._learning.png`` (validation RMSE and training loss per epoch, one line per fold) and, for
  probabilistic models, ``..._calibration.png`` (observed vs expected interval coverage);
- ``ablation.csv``: every variant of our model against its 2D twin on shared folds;
- ``report.html``: all of it as one self-contained page, with interactive 3D views of a few noisy
  complexes per dataset (``pairfactory.ml.report_html``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairfactory.errors import InputFileError, UserError
from pairfactory.fileio import atomic_write, atomic_write_text
from pairfactory.ml.models import MODEL_NAMES
from pairfactory.ml.models.registry import model_spec
from pairfactory.ml.tune import non_default_hparams, read_fold_metrics, setting_label
from pairfactory.ml.uncertainty import calibration_kind

log = logging.getLogger(__name__)


# Test RMSE reported in the CGIB paper (Lee et al., ICML 2023, Table 2: 5-fold CV × 5 repeats,
# random split). FreeSolv there is the 560 FreeSolv-tagged pairs of CombiSolv-Exp (`freesolv_cgib`);
# MNSol there is quoted as 3,037 entries (we have the 2,530 neutral absolute ones).
PUBLISHED_RMSE: dict[str, dict[str, float]] = {
    "chromophore/absorption_max_nm": {"attentivefp": 21.25, "cigin": 19.32, "cgib": 18.11},
    "chromophore/emission_max_nm": {"attentivefp": 28.84, "cigin": 25.09, "cgib": 23.90},
    "chromophore/ln_lifetime_ns": {"attentivefp": 0.85, "cigin": 0.80, "cgib": 0.77},
    "freesolv_cgib/dg_hydration_kcal_mol": {"attentivefp": 1.05, "cigin": 0.91, "cgib": 0.85},
    "mnsol/dg_solv_kcal_mol": {"attentivefp": 0.69, "cigin": 0.61, "cgib": 0.54},
}
# The 642-compound FreeSolv is compared with the paper's (560-pair) FreeSolv numbers, flagged as
# such.
PUBLISHED_ALIAS: dict[str, str] = {
    "freesolv/dg_hydration_kcal_mol": "freesolv_cgib/dg_hydration_kcal_mol"
}
# The project's goal for its own model, same protocol.
PROJECT_TARGET_RMSE: dict[str, float] = {
    "chromophore/absorption_max_nm": 16.05,
    "chromophore/emission_max_nm": 20.14,
    "chromophore/ln_lifetime_ns": 0.69,
    "freesolv_cgib/dg_hydration_kcal_mol": 0.80,
    "mnsol/dg_solv_kcal_mol": 0.47,
}
GROUP_KEYS = ["dataset", "target", "split", "model"]
REQUIRED_METRICS = ("dataset", "target", "model", "split", "fold", "repeat", "rmse", "mae", "r2")


def published_rmse(dataset: str, target: str, model: str, split: str) -> tuple[float, str]:
    """(published RMSE, note) for a row; NaN when the paper has no comparable number."""
    if split != "random":
        return math.nan, ""
    task = f"{dataset}/{target}"
    note = ""
    if task in PUBLISHED_ALIAS:
        task, note = PUBLISHED_ALIAS[task], "paper: 560-pair FreeSolv"
    return PUBLISHED_RMSE.get(task, {}).get(model, math.nan), note


def collect_metrics(results_roots: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """All fold metrics under one results folder, or several read as one (their folds are
    labelled together, so that runs in different folders trained differently stay apart), as
    one frame (one row per finished fold)."""
    given = [results_roots] if isinstance(results_roots, str | Path) else results_roots
    roots = [Path(root) for root in given]
    for root in roots:
        if not root.is_dir():
            raise UserError(
                f"results folder {root} does not exist; run `pairfactory evaluate` first"
            )
    rows = []
    for path in (path for root in roots for path in sorted(root.rglob("metrics.json"))):
        record = read_fold_metrics(path)
        missing = [k for k in REQUIRED_METRICS if k not in record]
        if missing:
            raise InputFileError(
                path,
                f"missing key(s) {', '.join(missing)}; was it written by `pairfactory evaluate`?",
            )
        record["path"] = str(path.parent)
        # folds of one model trained with other hyper-parameters are another row, never averaged in
        record["base_model"] = record["model"]
        rows.append(record)
    if not rows:
        where = ", ".join(str(root) for root in roots)
        raise UserError(f"no metrics.json under {where}; run `pairfactory evaluate` first")
    _label_variants(rows)
    return pd.DataFrame(rows)


def _label_variants(records: list[dict[str, Any]]) -> None:
    """Set each fold's ``model`` to its variant label (``_variant_settings``). Where folds that
    would share a label were trained with different training settings (learning rate, batch
    size, epochs, …: two runs of one model at different points of a grid), the settings that
    differ join the label, so that differently trained folds of a registry model do not average
    into one row; a report of runs trained alike keeps its short labels. A setting a fold did not
    record counts as its default."""
    # target scaling is in every label already
    tunable = _learning_settings() - {"standardize_targets"}
    changed = [_variant_settings(record) for record in records]
    groups: dict[tuple, list[int]] = {}
    for i, record in enumerate(records):
        model = record["model"]
        label = model if changed[i] is None else setting_label(model, changed[i])
        key = (record["dataset"], record["target"], record["split"], label)
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        settings = [_mixing_settings(records[i], tunable) for i in members]
        # a fold that did not record a setting (descriptors, before they were recorded) takes no
        # part in telling the others apart
        differing = sorted(
            name
            for name in set().union(*settings)
            if len({json.dumps(s[name], sort_keys=True) for s in settings if name in s}) > 1
        )
        for i, own in zip(members, settings, strict=True):
            if changed[i] is None:
                continue
            changed[i].update({name: own.get(name) for name in differing})
    for record, settings in zip(records, changed, strict=True):
        if settings is not None:
            record["model"] = setting_label(record["model"], settings)


def _mixing_settings(record: dict[str, Any], tunable: frozenset[str]) -> dict[str, Any]:
    """What a fold was trained with that joins its label where folds would otherwise mix: its
    ``tunable`` training settings, for a model with a σ how it was calibrated (``calibration``:
    by one factor in folds from before σ grew with novelty, else with novelty; their NLL and
    coverage do not average), and, for a model that learns from samples, whether it had the
    descriptor table (``descriptors``: its auxiliary ΔG_solv target)."""
    own = _train_settings_with_defaults(record.get("settings"))
    mixing = {name: own.get(name) for name in tunable}
    kind = calibration_kind(record)
    if kind is not None:
        mixing["calibration"] = kind
    samples = record.get("samples")
    model = record["model"]  # the registry name: labels are set after this is read
    if model in MODEL_NAMES and model_spec(model).uses_samples:
        if isinstance(samples, dict) and "descriptors" in samples:
            mixing["descriptors"] = samples["descriptors"] is not None
    return mixing


def _learning_settings() -> frozenset[str]:
    """The training settings that can change what a fold learns: the tunable ones but the
    inference batch size."""
    from pairfactory.ml.train import tunable_train_settings

    return tunable_train_settings() - {"eval_batch_size"}


def _train_settings_with_defaults(settings: Any) -> dict[str, Any]:
    """A fold's recorded training settings; one it did not record counts as its default."""
    from pairfactory.ml.train import TrainSettings, recorded_setting

    recorded = settings if isinstance(settings, dict) else {}
    # as the type of the setting (a fold may have recorded weight_decay 0 where another has 0.0)
    return asdict(TrainSettings()) | {k: recorded_setting(k, v) for k, v in recorded.items()}


def _variant_settings(record: dict[str, Any]) -> dict[str, Any] | None:
    """What makes a fold's model a variant (``cgib`` at the model's defaults, ``cgib@beta=0.0001``
    otherwise, the labels of ``pairfactory.ml.tune``): its non-default hyper-parameters, target
    scaling, ensemble size and, for our model, sample-set settings. None for a model outside the
    registry or a fold without recorded hyper-parameters (labelled by its name alone)."""

    model = record["model"]
    if model not in MODEL_NAMES or not isinstance(record.get("hparams"), dict):
        return None
    changed = non_default_hparams(model, record["hparams"])
    if (record.get("settings") or {}).get("standardize_targets"):
        changed["standardize_targets"] = True  # a training setting, but it changes what is learned
    if int(record.get("ensemble") or 1) > 1:
        changed["ensemble"] = int(record["ensemble"])
    changed.update(_extra_pair_settings(record.get("extra_pairs")))
    if model_spec(model).uses_samples:  # what of the samples it learned from
        changed.update(_non_default_sample_settings(record.get("samples")))
    return changed


def _extra_pair_settings(extra: Any) -> dict[str, Any]:
    """A fold trained with extra pairs (``ml.extra_pairs``) is its own, labelled variant:
    ``extra=<dataset>``, with the solvents it took and a holdout other than the default."""
    if not isinstance(extra, dict):
        return {}
    label: dict[str, Any] = {"extra": extra.get("dataset")}
    if extra.get("solvents"):
        label["extra_solvents"] = "+".join(extra["solvents"])
    if extra.get("holdout", "solute") != "solute":
        label["extra_holdout"] = extra["holdout"]
    return label


def _non_default_sample_settings(samples: Any) -> dict[str, Any]:
    """What a fold of a model that learns from samples learned from, where it differs from the
    default: no samples at all (``samples=false``) and the sample-set settings (dose-response
    knobs: samples per pair, coverage, hydrogens; quality control as ``qc.<name>``). What a fold
    did not record (folds older than the recording) counts as the default. (Whether it had the
    descriptor table joins the label only where folds would mix: ``_mixing_settings``.)"""
    from pairfactory.ml.sample_features import QCSettings
    from pairfactory.ml.sample_sets import SampleSetSettings

    if not isinstance(samples, dict):
        return {"samples": False}
    changed: dict[str, Any] = {}
    given = samples.get("settings")
    if not isinstance(given, dict):
        return changed
    defaults = asdict(SampleSetSettings())
    for name, default in defaults.items():
        if name in ("seed", "qc") or name not in given:
            continue
        if given[name] != default:
            changed[name] = given[name]
    qc, qc_defaults = given.get("qc"), asdict(QCSettings())
    if isinstance(qc, dict):
        changed.update({f"qc.{k}": v for k, v in qc.items() if qc_defaults.get(k, v) != v})
    return changed


# per-fold numbers beside the RMSE, averaged over the folds that have them: a probabilistic model's
# uncertainty on its test set (σ calibrated on validation), and with shards the test RMSE of the
# pairs with and without QM samples
FOLD_QUALITY_METRICS = (
    "nll",
    "miscalibration_area",
    "coverage_68",
    "coverage_95",
    "spearman_abs_error_std",
    "rmse_test_covered",
    "rmse_test_uncovered",
    "n_test_covered",
)


def _fold_numbers(group: pd.DataFrame, name: str) -> pd.Series:
    """The folds' values of ``name`` that they recorded (folds of older versions lack some)."""
    if name not in group:
        return pd.Series(dtype=float)
    return pd.to_numeric(group[name], errors="coerce").dropna()


def _fold_mean(group: pd.DataFrame, name: str) -> float:
    values = _fold_numbers(group, name)
    return float(values.mean()) if len(values) else math.nan


def _fold_max(group: pd.DataFrame, name: str) -> float:
    values = _fold_numbers(group, name)
    return float(values.max()) if len(values) else 0.0


def _recorded(value: Any) -> Any:
    """A fold's value, None where the fold did not record it (a DataFrame of folds from several
    versions holds NaN there)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def aggregate(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, target, split, model) with mean (std) over folds × repeats."""
    out = []
    for key, group in metrics.groupby(GROUP_KEYS, sort=True):
        dataset, target, split, model = key
        rmse = group["rmse"].to_numpy(dtype=float)
        per_repeat = group.groupby("repeat")["rmse"].mean()
        base_model = group["base_model"].iloc[0] if "base_model" in group else model
        pub, note = published_rmse(dataset, target, base_model, split)
        if base_model != model and pub == pub:
            note = "; ".join(filter(None, [note, f"published setting: {base_model} defaults"]))
        task = PUBLISHED_ALIAS.get(f"{dataset}/{target}", f"{dataset}/{target}")
        row = {
            "dataset": dataset,
            "target": target,
            "split": split,
            "model": model,
            "unit": group["unit"].iloc[0] if "unit" in group else "",
            "n_folds": len(group),
            "n_repeats": group["repeat"].nunique(),
            # k of the k-fold splits (0 if unrecorded): fewer than n_repeats × k folds means
            # repeats still running, or only the first folds run (evaluate.run_folds)
            "folds_per_repeat": int(_fold_max(group, "n_folds")),
            "ensemble": int(_fold_max(group, "ensemble")) or 1,
            "rmse_mean": float(rmse.mean()),
            "rmse_std": float(rmse.std(ddof=0)) if len(rmse) > 1 else math.nan,
            # CGIB reports the std over repeats of the 5-fold mean; NaN with a single repeat.
            "rmse_std_repeats": float(per_repeat.std(ddof=0)) if len(per_repeat) > 1 else math.nan,
            "mae_mean": float(group["mae"].mean()),
            "r2_mean": float(group["r2"].mean()),
            "best_epoch_mean": float(group["best_epoch"].mean())
            if "best_epoch" in group
            else math.nan,
            "epochs_run_mean": float(group["epochs_run"].mean())
            if "epochs_run" in group
            else math.nan,
            "max_epochs": int(group["settings"].map(lambda s: s.get("max_epochs", 0)).max())
            if "settings" in group
            else 0,
            "n_test_mean": float(group["n_test"].mean()) if "n_test" in group else math.nan,
            **{f"{name}_mean": _fold_mean(group, name) for name in FOLD_QUALITY_METRICS},
            "seconds_total": float(group["seconds"].sum()) if "seconds" in group else math.nan,
            "published_rmse": pub,
            "published_note": note,
            "delta_vs_published_pct": 100.0 * (rmse.mean() - pub) / pub if pub == pub else math.nan,
            "project_target_rmse": PROJECT_TARGET_RMSE.get(task, math.nan)
            if split == "random"
            else math.nan,
        }
        out.append(row)
    return pd.DataFrame(out)


def markdown_table(summary: pd.DataFrame) -> str:
    """The Markdown results table (the numbers are the CSV's, rounded for reading)."""
    lines = [
        "| dataset / target | split | model | folds | test RMSE mean (std) | MAE | R² "
        "| best epoch (of max) | published RMSE | Δ vs published | project target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples(index=False):
        digits = 2 if row.rmse_mean >= 5 else 3
        rmse = (
            f"{row.rmse_mean:.{digits}f} ({row.rmse_std:.{digits}f})"
            if row.rmse_std == row.rmse_std
            else f"{row.rmse_mean:.{digits}f}"
        )
        pub = (
            "–"
            if row.published_rmse != row.published_rmse
            else f"{row.published_rmse:.2f}"
            + (f" ({row.published_note})" if row.published_note else "")
        )
        delta = (
            "–"
            if row.delta_vs_published_pct != row.delta_vs_published_pct
            else f"{row.delta_vs_published_pct:+.1f} %"
        )
        tgt = (
            "–"
            if row.project_target_rmse != row.project_target_rmse
            else f"{row.project_target_rmse:.2f}"
        )
        epochs = f"{row.best_epoch_mean:.0f} ({row.max_epochs})"
        if row.ensemble > 1:  # an ensemble fold records its first member's best epoch
            epochs += ", member 0"
        expected = row.n_repeats * row.folds_per_repeat
        folds = f"{row.n_folds} of {expected}" if row.n_folds < expected else f"{row.n_folds}"
        lines.append(
            f"| {row.dataset} / {row.target} [{row.unit}] | {row.split} | {row.model} "
            f"| {folds} ({row.n_repeats} rep.) | {rmse} | {row.mae_mean:.{digits}f} "
            f"| {row.r2_mean:.3f} | {epochs} | {pub} | {delta} | {tgt} |"
        )
    return "\n".join(lines) + "\n"


QUALITY_NOTE = (
    "Mean over folds. σ calibrated on each fold's validation pairs; NLL of the test targets in "
    "the table's unit; the RMSE of the test pairs with and without QM samples (pairs with "
    "samples: mean per fold). – where a fold does not report it (a model without σ, a run "
    "without shards)."
)


def quality_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``aggregate`` with an uncertainty or sample-coverage number."""
    return summary[summary[[f"{name}_mean" for name in FOLD_QUALITY_METRICS]].notna().any(axis=1)]


def quality_markdown(summary: pd.DataFrame) -> str:
    """Uncertainty and sample coverage of the rows that have them (mean over folds); empty if
    none does."""
    shown = quality_rows(summary)
    if shown.empty:
        return ""
    lines = [
        "| dataset / target | split | model | folds | test NLL | miscalibration area "
        "| 68 % / 95 % coverage | ρ(\\|error\\|, σ) | RMSE with samples (pairs) | RMSE without |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def number(value: float, digits: int = 3) -> str:
        return "–" if value != value else f"{value:.{digits}f}"

    for row in shown.itertuples(index=False):
        covered = number(row.rmse_test_covered_mean)
        if row.n_test_covered_mean == row.n_test_covered_mean:
            covered += f" ({row.n_test_covered_mean:.0f})"
        lines.append(
            f"| {row.dataset} / {row.target} [{row.unit}] | {row.split} | {row.model} "
            f"| {row.n_folds} | {number(row.nll_mean)} | {number(row.miscalibration_area_mean)} "
            f"| {number(row.coverage_68_mean, 2)} / {number(row.coverage_95_mean, 2)} "
            f"| {number(row.spearman_abs_error_std_mean, 2)} | {covered} "
            f"| {number(row.rmse_test_uncovered_mean)} |"
        )
    return "\n".join(lines) + "\n"


def read_test_predictions(paths: list[str]) -> pd.DataFrame:
    """The test rows of every fold's predictions.parquet under ``paths`` (a fold without one is
    logged and left out)."""
    frames = []
    for folder in paths:
        path = Path(folder) / "predictions.parquet"
        if path.is_file():
            part = pd.read_parquet(path)
            frames.append(part[part["role"] == "test"])
        else:
            log.warning("%s: no predictions.parquet, left out of the parity plot", folder)
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["y_true", "y_pred"])
    )


def _save_figure(fig: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".")))


def parity_plot(preds: pd.DataFrame, title: str, unit: str, path: Path) -> Path | None:
    """Predicted vs measured on the test sets of every fold (``read_test_predictions``; a fold's
    test set appears once per repeat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if preds.empty:
        return None
    y, p = preds["y_true"].to_numpy(float), preds["y_pred"].to_numpy(float)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    pad = 0.05 * (hi - lo or 1.0)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.scatter(y, p, s=8, alpha=0.5, linewidths=0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", lw=0.8)
    rmse = float(np.sqrt(np.mean((p - y) ** 2)))
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"measured [{unit}]")
    ax.set_ylabel(f"predicted [{unit}]")
    ax.set_title(f"{title}; {len(y)} test predictions, pooled RMSE {rmse:.3g}", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def learning_plot(group: pd.DataFrame, title: str, unit: str, path: Path) -> Path | None:
    """Validation RMSE (left) and training loss (right, log) per epoch; one line per fold, best
    epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for row in group.itertuples(index=False):
        hist_path = Path(row.path) / "history.csv"
        if hist_path.is_file():
            curves.append(
                (
                    f"r{row.repeat}-f{row.fold}",
                    pd.read_csv(hist_path),
                    getattr(row, "best_epoch", None),
                )
            )
    if not curves:
        return None
    fig, (ax_v, ax_t) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for name, hist, best in curves:
        (line,) = ax_v.plot(hist["epoch"], hist["valid_rmse"], lw=0.8, label=name)
        if best is not None and best in set(hist["epoch"]):
            ax_v.scatter(
                [best],
                hist.loc[hist["epoch"] == best, "valid_rmse"],
                color=line.get_color(),
                s=12,
                zorder=3,
            )
        ax_t.plot(hist["epoch"], hist["train_loss"], lw=0.8, color=line.get_color())
    ax_v.set_xlabel("epoch")
    ax_v.set_ylabel(f"validation RMSE [{unit}]")
    ax_t.set_xlabel("epoch")
    ax_t.set_ylabel("training loss (MSE or NLL, + aux)")
    # a probabilistic model's loss (a Gaussian NLL) goes below zero: log scale only when it can
    if all((hist["train_loss"] > 0).all() for _, hist, _ in curves):
        ax_t.set_yscale("log")
    if len(curves) <= 10:
        ax_v.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def calibration_plot(preds: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Observed vs expected coverage of the central prediction intervals (calibrated σ) on the
    test sets of every fold; None for a model without σ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pairfactory.ml.uncertainty import coverage_curve, miscalibration_area

    if preds.empty or "y_std" not in preds or preds["y_std"].isna().all():
        return None
    y, mu, sd = (preds[c].to_numpy(float) for c in ("y_true", "y_pred", "y_std"))
    expected, observed = coverage_curve(y, mu, sd)
    area = miscalibration_area(y, mu, sd)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot(expected, observed, lw=1.2, label="observed")
    ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", label="perfect calibration")
    ax.set_xlabel("expected coverage of the central interval")
    ax.set_ylabel("observed coverage (test pairs)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"{title}; miscalibration area {area:.3f}", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


# The reference of the ablation table: our model without samples or descriptors (same
# architecture), against which every other variant of our model is compared fold by fold.
ABLATION_REFERENCE = "probpair_2d"
ABLATION_MODELS = ("probpair", "probpair_2d")
# chosen per model on validation (`evaluate.model_hparams`), one budget for every model: a variant
# and its twin are compared each at its own choice, and the table says where they differ
PER_MODEL_TRAINING = ("batch_size", "lr")
# what a fold was trained in besides the model's own hyper-parameters: a variant is compared with
# the twin trained in the same context
CONTEXT_SETTINGS = ("standardize_targets", "ensemble", "extra", "extra_solvents", "extra_holdout")
ABLATION_COLUMNS = (
    "dataset",
    "target",
    "unit",
    "split",
    "variant",
    "reference",
    "training_differs",
    "folds",
    "rmse_variant",
    "rmse_reference",
    "difference",
    "ci95_half_width",
    "p",
    "folds_won",
)


def unmatched_note(ablation: pd.DataFrame) -> str:
    """The sentence naming the variants ``ablation_table`` left out; empty if none was."""
    unmatched = ablation.attrs.get("unmatched")
    if not unmatched:
        return ""
    return (
        "Without a 2D twin trained alike on the same folds (same epochs, target scaling, "
        f"ensemble and extra pairs), so not compared: {', '.join(unmatched)}."
    )


def ablation_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Every variant of our model against the 2D twin trained alike, on the folds both finished
    (every repeat): mean test RMSE of each, the mean paired difference with its 95 % interval and
    p (corrected resampled t-test), and how many folds the variant won.

    The twin of a ``probpair`` variant has the same twin-applicable hyper-parameters and context
    (``probpair@alpb_input=true`` against ``probpair_2d@alpb_input=true``: what the samples add)
    where that twin ran, else it is the plain twin in the same context (``probpair@beta=0.0``
    against ``probpair_2d``: the labels say what differs); the twin of a ``probpair_2d`` variant is
    the plain twin in the same context (what that hyper-parameter does). A context (target
    scaling, ensemble, extra pairs) is never mixed. Batch size and learning rate may differ (each
    model at its choice): ``training_differs`` names them."""
    from pairfactory.ml.statistics import corrected_resampled_t

    rows = []
    ours = metrics[metrics["base_model"].isin(ABLATION_MODELS)].copy()
    # only folds trained alike are compared (epochs, target scaling, ...), on the same test sets
    # (the same k and seed of the k-fold splits)
    ours["training"] = ours["settings"].map(_training_key) if "settings" in ours else ""
    ours["protocol"] = [_split_key(record) for record in ours.to_dict("records")]
    ours["twin_settings"] = [
        json.dumps(_twin_settings(record), sort_keys=True) for record in ours.to_dict("records")
    ]
    unmatched = []
    for (dataset, target, split, _, _), group in ours.groupby(
        ["dataset", "target", "split", "training", "protocol"]
    ):
        _refuse_repeated_folds(group)
        twins = group[group["base_model"] == ABLATION_REFERENCE]
        for model, variant in group.groupby("model"):
            wanted = _reference_settings(variant.iloc[0])
            if wanted == variant["twin_settings"].iloc[0] and model in set(twins["model"]):
                continue  # a twin that is the reference of its context
            matching = twins[(twins["twin_settings"] == wanted) & (twins["model"] != model)]
            if matching.empty:  # a part the twin shares, switched: against the plain twin
                plain = _reference_settings(variant.iloc[0], plain=True)
                matching = twins[(twins["twin_settings"] == plain) & (twins["model"] != model)]
            compared = False
            for reference_model, reference in matching.groupby("model"):
                ref = reference.set_index(["repeat", "fold"])
                var = variant.set_index(["repeat", "fold"])
                keys = sorted(set(ref.index) & set(var.index))
                if not keys:
                    continue
                compared = True
                a = ref.loc[keys, "rmse"].to_numpy(float)
                b = var.loc[keys, "rmse"].to_numpy(float)
                n_train = float(ref.loc[keys, "n_train"].mean())
                n_test = float((ref.loc[keys, "n_valid"] + ref.loc[keys, "n_test"]).mean())
                half, _, p = corrected_resampled_t(b - a, n_train, n_test)
                rows.append(
                    {
                        "dataset": dataset,
                        "target": target,
                        "unit": str(variant["unit"].iloc[0]) if "unit" in variant else "",
                        "split": split,
                        "variant": model,
                        "reference": str(reference_model),
                        "training_differs": _training_difference(
                            variant.iloc[0].get("settings"), reference.iloc[0].get("settings")
                        ),
                        "folds": len(keys),
                        "rmse_variant": float(b.mean()),
                        "rmse_reference": float(a.mean()),
                        "difference": float((b - a).mean()),
                        "ci95_half_width": half,
                        "p": p,
                        "folds_won": int((b < a).sum()),
                    }
                )
            if not compared:
                unmatched.append(f"{dataset}/{target} {split}: {model}")
    table = pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))
    # named in the report: a variant left out for want of a twin trained alike on its folds
    table.attrs["unmatched"] = unmatched
    return table


def _twin_settings(record: dict[str, Any]) -> dict[str, Any]:
    """What of a fold of our model its 2D twin can share: the hyper-parameters that would change
    the twin (not the sample terms' own, which the twin switches off) and the context
    (``CONTEXT_SETTINGS``)."""
    record = {name: _recorded(value) for name, value in record.items()}
    settings = _variant_settings({**record, "model": record["base_model"]}) or {}
    context = {name: value for name, value in settings.items() if name in CONTEXT_SETTINGS}
    hparams = record.get("hparams")
    own = non_default_hparams(ABLATION_REFERENCE, hparams) if isinstance(hparams, dict) else {}
    return own | context


def _reference_settings(fold: pd.Series, plain: bool = False) -> str:
    """The ``twin_settings`` of the twin a variant is compared with: the twin with the same
    hyper-parameters, or (``plain``, and always for a twin variant) the twin at its defaults, in
    the same context."""
    own = json.loads(fold["twin_settings"])
    if plain or fold["base_model"] == ABLATION_REFERENCE:
        own = {name: value for name, value in own.items() if name in CONTEXT_SETTINGS}
    return json.dumps(own, sort_keys=True)


def _training_difference(variant: Any, reference: Any) -> str:
    """``lr 0.0003 / 0.001`` where the variant's per-model training settings differ from the
    twin's; empty where they agree."""
    a, b = _train_settings_with_defaults(variant), _train_settings_with_defaults(reference)
    return ", ".join(
        f"{name} {a.get(name)} / {b.get(name)}"
        for name in PER_MODEL_TRAINING
        if a.get(name) != b.get(name)
    )


def _split_key(record: dict[str, Any]) -> str:
    """k and seed of the k-fold splits a fold's test set came from, the same for every repeat
    (repeat r splits with seed + r: ``ProtocolOptions.split_seed``), so that the folds of all
    repeats pair up."""
    repeat = int(record["repeat"])
    split_seed = _recorded(record.get("split_seed"))
    settings = _recorded(record.get("settings"))
    model_seed = settings.get("seed") if isinstance(settings, dict) else None
    if record.get("split") == "scaffold":  # seed-free: evaluate records split_seed None
        seed = None
    elif split_seed is not None:
        seed = int(split_seed) - repeat
    elif model_seed is not None:  # folds written before the split seed was recorded
        seed = int(model_seed) - repeat  # (the model seed is seed + repeat too)
    else:
        seed = None
    return json.dumps({"n_folds": _recorded(record.get("n_folds")), "seed": seed})


def _refuse_repeated_folds(group: pd.DataFrame) -> None:
    repeated = group[group.duplicated(["model", "repeat", "fold"], keep=False)]
    if not repeated.empty:
        row = repeated.iloc[0]
        same = (
            (repeated["model"] == row["model"])
            & (repeated["repeat"] == row["repeat"])
            & (repeated["fold"] == row["fold"])
        )
        paths = ", ".join(repeated.loc[same, "path"])
        raise UserError(
            f"{row['model']} has more than one fold {row['fold']} of repeat {row['repeat']} "
            f"trained alike ({paths}); pass each run's results folder once, or move the copy away"
        )


def _training_key(settings: Any) -> str:
    """What a fold was trained with that a compared twin must share: the learning settings but
    the ones each model may choose for itself (``PER_MODEL_TRAINING``)."""
    if not isinstance(settings, dict):
        return ""
    own = _train_settings_with_defaults(settings)
    names = sorted(_learning_settings() - set(PER_MODEL_TRAINING))
    return json.dumps({name: own.get(name) for name in names})


def ablation_markdown(table: pd.DataFrame) -> str:
    lines = [
        "| dataset / target | split | variant | 2D twin | trained differently | folds "
        "| RMSE variant | RMSE twin | Δ (95 % CI) | p | folds won |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        ci = f" ± {row.ci95_half_width:.3f}" if row.ci95_half_width == row.ci95_half_width else ""
        # no p without a spread of the differences (a single fold, or identical folds)
        p = f"{row.p:.2f}" if row.p == row.p else "– (no spread)"
        lines.append(
            f"| {row.dataset} / {row.target} [{row.unit}] | {row.split} | {row.variant} "
            f"| {row.reference} | {row.training_differs or '–'} | {row.folds} "
            f"| {row.rmse_variant:.3f} | {row.rmse_reference:.3f} | {row.difference:+.3f}{ci} "
            f"| {p} | {row.folds_won} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    results_root: str | Path,
    out_dir: str | Path,
    plots: bool = True,
    html: bool = True,
    shards_dirs: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Aggregate, write results.md / results.csv / ablation.csv, the plots and, with ``html``,
    the self-contained ``report.html`` (with 3D views of the complexes in ``shards_dirs``, one
    shard folder per dataset and engine tag); return what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = collect_metrics(results_root)
    summary = aggregate(metrics)
    # atomic: several `bench/reproduce.py --claim` processes may rewrite one report
    atomic_write_text(out / "results.csv", summary.to_csv(index=False))
    ablation = ablation_table(metrics)
    atomic_write_text(out / "ablation.csv", ablation.to_csv(index=False))
    written_plots = []
    sections: list[tuple[str, Path]] = []
    if plots:
        for key, group in metrics.groupby(GROUP_KEYS, sort=True):
            dataset, target, split, model = key
            unit = str(group["unit"].iloc[0]) if "unit" in group else ""
            base = out / "plots" / dataset / target / split
            title = f"{model} on {dataset}/{target}\n{split} split, {len(group)} folds"
            learning_title = title
            if _fold_max(group, "ensemble") > 1:  # the history a fold keeps is its first member's
                learning_title += ", member 0 of each ensemble"
            preds = read_test_predictions(group["path"].tolist())  # once for both plots
            for made, section in (
                (
                    parity_plot(preds, title, unit, base / f"{model}_parity.png"),
                    "Parity plots (test sets)",
                ),
                (
                    learning_plot(group, learning_title, unit, base / f"{model}_learning.png"),
                    "Learning curves",
                ),
                (
                    calibration_plot(preds, title, base / f"{model}_calibration.png"),
                    "Calibration of the probabilistic models",
                ),
            ):
                if made is not None:
                    written_plots.append(made)
                    sections.append((section, made))
    lines = [
        "# Results",
        "",
        f"Aggregated from {len(metrics)} finished folds under `{results_root}`. "
        "Test RMSE is taken at the epoch",
        "with the best validation RMSE of each fold; mean (std) over all folds × repeats. "
        "Published numbers:",
        "CGIB paper (Lee et al., ICML 2023), random 5-fold CV × 5 repeats; "
        "shown for the random split only.",
        "",
        markdown_table(summary),
    ]
    quality = quality_markdown(summary)
    if quality:
        lines += [
            "## Uncertainty and QM-sample coverage",
            "",
            QUALITY_NOTE,
            "",
            quality,
        ]
    unmatched = unmatched_note(ablation)
    if not ablation.empty or unmatched:
        lines += ["## Ablation: our model against its 2D twin (same folds)", ""]
        if not ablation.empty:
            lines.append(ablation_markdown(ablation))
        if unmatched:
            lines += [unmatched, ""]
    if written_plots:
        lines += ["## Plots", ""]
        lines += [f"- [{p.relative_to(out)}]({p.relative_to(out)})" for p in written_plots]
        lines.append("")
    html_path = None
    if html:
        from pairfactory.ml.complex_views import complex_views
        from pairfactory.ml.report_html import write_html_report

        views = [v for v in (complex_views(d) for d in shards_dirs) if v is not None]
        html_path = write_html_report(
            out, summary, sections, ablation, views, len(metrics), results_root
        )
        lines += [f"The same as one HTML page, with 3D views: [report.html]({html_path.name})", ""]
    atomic_write_text(out / "results.md", "\n".join(lines))
    log.info(
        "report: %d folds, %d rows, %d plots → %s",
        len(metrics),
        len(summary),
        len(written_plots),
        out,
    )
    return {
        "n_folds": len(metrics),
        "summary": summary,
        "plots": written_plots,
        "markdown": out / "results.md",
        "html": html_path,
        "ablation": ablation,
        "csv": out / "results.csv",
    }
