"""Final models: one model (or an ensemble of seeds) trained on a whole pair table.

A seeded holdout (``holdout_fraction`` of the rows) decides early stopping and calibrates σ; the
rest trains. The hyper-parameters and settings are those of the protocol (`ProtocolOptions`, from
the config's ``evaluate`` section: what validation chose). Every member checkpoints its training
state every ``checkpoint_every_s`` seconds, so a job killed at its time limit resumes where it
stopped when rerun, and ends with the numbers of an uninterrupted run; finished members are
skipped. The folder layout is :mod:`pairfactory.ml.model_dir`.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairfactory import __version__
from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write, atomic_write_text, file_sha256
from pairfactory.ml.applicability import (
    DEFAULT_MIN_SOLUTE_SIMILARITY,
    domain_from_molecules,
    nearest_training_similarity,
)
from pairfactory.ml.datasets import PairGraphDataset
from pairfactory.ml.evaluate import (
    ProtocolOptions,
    code_state,
    fold_extra_training,
    model_inputs,
    read_pairs,
)
from pairfactory.ml.extra_pairs import with_extra_training
from pairfactory.ml.graph_cache import GraphCache
from pairfactory.ml.model_dir import (
    CHECKPOINT_FILE,
    HISTORY_FILE,
    HOLDOUT_FILE,
    MEMBER_FILE,
    MOLECULES_FILE,
    WEIGHTS_FILE,
    MemberRecord,
    ModelCard,
    featurization_spec,
    member_dir,
    write_card,
)
from pairfactory.ml.models import MODEL_NAMES, build_model
from pairfactory.ml.models.registry import model_spec
from pairfactory.ml.predictor import combine_members, predictive_sigma
from pairfactory.ml.sample_sets import fold_samples, read_descriptors, require_every_solvent
from pairfactory.ml.splits import FoldSplit
from pairfactory.ml.train import (
    Checkpointing,
    TrainSettings,
    regression_metrics,
    save_weights,
    seed_everything,
    train_model,
)
from pairfactory.ml.uncertainty import (
    SigmaCalibration,
    fit_sigma_calibration,
    fit_sigma_scale,
)
from pairfactory.qm.shards import system_id_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinalSettings:
    """How a final model is trained besides the protocol options."""

    ensemble: int = 1
    holdout_fraction: float = 0.1
    checkpoint_every_s: float = 300.0

    def __post_init__(self) -> None:
        if self.ensemble < 1:
            raise UserError(f"ensemble must be >= 1 (got {self.ensemble})")
        if not 0.0 < self.holdout_fraction < 0.5:
            raise UserError(f"holdout_fraction must be in (0, 0.5) (got {self.holdout_fraction})")
        if self.checkpoint_every_s < 0:
            raise UserError("checkpoint_every_s must be >= 0")


def holdout_rows(n_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, holdout rows): a seeded random ``fraction`` of the rows held out."""
    if n_rows < 4:
        raise UserError(f"a final model needs at least 4 pairs (the table has {n_rows})")
    order = np.random.default_rng(seed).permutation(n_rows)
    n_holdout = max(1, int(round(fraction * n_rows)))
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


def train_final(
    pairs_path: str | Path,
    model_name: str,
    out_dir: str | Path,
    options: ProtocolOptions,
    final: FinalSettings = FinalSettings(),
    progress: bool = True,
    input_source: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Train (or resume) every member of a final model into ``out_dir`` and write its card.

    A model that reads per-pair inputs (``alpb_input``) reads them from ``options.descriptors``
    and needs ``input_source``: the QM engine that table's geometries came from
    (``{"engine": QmSettings.engine_config(), "engine_tag": ...}``), which the card records so
    that prediction computes its pairs' values the same way."""
    if model_name not in MODEL_NAMES:
        raise UserError(f"unknown model {model_name!r}; choose one of {', '.join(MODEL_NAMES)}")
    out_dir = Path(out_dir)
    started = time.perf_counter()
    table = read_pairs(pairs_path)
    table_sha256 = file_sha256(pairs_path)
    dataset, target, unit = (str(table[c].iloc[0]) for c in ("dataset", "target", "unit"))
    table_rows = len(table)
    train_rows, valid_rows = holdout_rows(len(table), final.holdout_fraction, options.seed)
    if options.reads_descriptors(model_name):
        require_every_solvent(options.descriptors, table)
    extra = None
    if options.extra_pairs is not None:  # training rows only; the holdout's solutes left out
        split = FoldSplit(0, train_rows, valid_rows, np.empty(0, dtype=np.int64))
        extra = fold_extra_training(table, split, options.extra_pairs)
        table, split = with_extra_training(table, split, extra.rows)
        train_rows = split.train
    extra_summary = None if extra is None else extra.summary
    cache = GraphCache(options.graph_cache)
    hparams = options.hparams_for(model_name)
    inputs, input_summary = model_inputs(
        model_name, hparams, table, options.descriptors, extra, options.extra_descriptors
    )
    inputs_record = None
    if input_summary is not None:  # set exactly when inputs are
        inputs_record = _inputs_record(input_summary, input_source, table)

    samples_summary = None
    supervision = None
    if options.shards_dir is not None and model_spec(model_name).uses_samples:
        samples = fold_samples(
            table,
            train_rows,
            options.shards_dir,
            cache,
            options.samples,
            options.descriptors,
            extra_descriptors_path=options.extra_descriptors,
        )
        supervision = samples.supervision
        samples_summary = {
            "shards_dir": str(options.shards_dir),
            "descriptors": None if options.descriptors is None else str(options.descriptors),
            "settings": asdict(options.samples),
            **samples.summary,
        }
    elif model_spec(model_name).uses_samples:
        log.warning(
            "%s learns from QM samples but none were given (--shards-dir): it trains on the 2D "
            "graphs alone",
            model_name,
        )
    train_ds = PairGraphDataset(
        table.iloc[train_rows].reset_index(drop=True),
        cache,
        supervision=supervision,
        inputs=None if inputs is None else inputs[train_rows],
    )
    valid_ds = PairGraphDataset(
        table.iloc[valid_rows].reset_index(drop=True),
        cache,
        inputs=None if inputs is None else inputs[valid_rows],
    )
    cache.save()
    rejected = len(train_ds.rejected) + len(valid_ds.rejected)
    if inputs_record is not None:  # of the pairs the model learns from (featurized)
        used = [item.inputs for ds in (train_ds, valid_ds) for item in ds.items]
        inputs_record["pairs"] = len(used)
        inputs_record["missing"] = {
            name: int(sum(bool(np.isnan(values[k])) for values in used))
            for k, name in enumerate(inputs_record["names"])
        }
    log.info(
        "%s/%s %s: %d training and %d holdout pairs (%d unfeaturizable), %d member(s)",
        dataset,
        target,
        model_name,
        len(train_ds),
        len(valid_ds),
        rejected,
        final.ensemble,
    )
    # only what changes the numbers, and only when there are inputs: folders of models without
    # them keep their fingerprints
    inputs_fingerprint = (
        {}
        if inputs_record is None
        else {
            "inputs": [
                inputs_record["names"],
                inputs_record["descriptors"]["sha256"],
                inputs_record["qm"]["engine_tag"],
            ]
        }
    )
    records: list[MemberRecord] = []
    holdout: list[pd.DataFrame] = []
    built_hparams: dict[str, Any] = {}
    for member in range(final.ensemble):
        settings = replace(options.settings_for(model_name), seed=options.seed + member)
        record, predictions, built_hparams = _train_member(
            model_name,
            hparams,
            settings,
            member,
            out_dir,
            train_ds,
            valid_ds,
            final,
            fingerprint={
                "model": model_name,
                "hparams": hparams,
                "settings": settings.to_dict(),
                "table_sha256": table_sha256,
                "holdout_fraction": final.holdout_fraction,
                "holdout_seed": options.seed,
                "samples": None if samples_summary is None else json.dumps(samples_summary),
                **inputs_fingerprint,
                # only when given: folders trained without extra pairs keep their fingerprints
                **({} if extra_summary is None else {"extra_pairs": extra_summary}),
            },
            progress=progress,
        )
        records.append(record)
        holdout.append(predictions)

    ensemble, calibration = _ensemble_holdout(holdout, records, valid_ds, train_ds)
    n_novel = int((ensemble["solute_similarity"] < DEFAULT_MIN_SOLUTE_SIMILARITY).sum())
    if calibration is not None:
        log.info(
            "σ calibrated on the holdout: factor %.4g, novelty σ %.4g %s (%d of %d holdout "
            "pairs with a solute of similarity < %.1f to every training solute)",
            calibration.scale,
            calibration.novelty_sigma,
            unit,
            n_novel,
            len(ensemble),
            DEFAULT_MIN_SOLUTE_SIMILARITY,
        )
    atomic_write(out_dir / HOLDOUT_FILE, lambda tmp: ensemble.to_parquet(tmp, index=False))
    # the solutes whose labels the weights were fitted to (not the holdout's, which only stopped
    # training and calibrated σ): the domain the flag and σ's novelty term measure against, as
    # the calibration measured the holdout's solutes
    molecules = _training_molecules(table.iloc[train_rows], cache)
    atomic_write(out_dir / MOLECULES_FILE, lambda tmp: molecules.to_parquet(tmp, index=False))
    domain = domain_from_molecules(molecules)
    metrics = regression_metrics(ensemble["y_true"].to_numpy(), ensemble["y_pred"].to_numpy())
    commit, _ = code_state()
    card = ModelCard(
        model=model_name,
        hparams=built_hparams,
        dataset=dataset,
        target=target,
        unit=unit,
        featurization=featurization_spec(),
        training_table={
            "path": str(pairs_path),
            "sha256": table_sha256,
            "rows": table_rows,
            "pairs_used": len(train_ds) + len(valid_ds),
            "pairs_rejected": rejected,
            # extra training pairs (their count is in pairs_used): table, holdout rule, counts
            **({} if extra_summary is None else {"extra_pairs": extra_summary}),
        },
        holdout={
            "fraction": final.holdout_fraction,
            "seed": options.seed,
            "n": len(valid_ds),
            # holdout pairs whose solute is unlike every training solute: what the σ's novelty
            # term was fitted from (few on a table of repeated solutes, such as MNSol)
            "novel_pairs": n_novel,
        },
        domain=domain.summary(),
        metrics={f"holdout_{k}": v for k, v in metrics.items()}
        | {"seconds": time.perf_counter() - started},
        members=records,
        settings=options.settings_for(model_name).to_dict(),
        samples=samples_summary,
        inputs=inputs_record,
        sigma_scale=None if calibration is None else calibration.scale,
        novelty_sigma=None if calibration is None else calibration.novelty_sigma,
        versions=software_versions(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        code_commit=commit,
    )
    write_card(out_dir, card)
    log.info(
        "%s: %s on %s/%s, holdout RMSE %.4g %s (%d member(s))",
        out_dir,
        model_name,
        dataset,
        target,
        metrics["rmse"],
        unit,
        len(records),
    )
    return card


def _inputs_record(
    summary: Mapping[str, Any], source: Mapping[str, Any] | None, table: pd.DataFrame
) -> dict[str, Any]:
    """What the card says about a model's per-pair inputs: their names, the descriptor table they
    came from, and the QM engine that prediction must use to compute them the same way (the
    engine that made the tables' geometries, checked against their ``engine_tag`` column; the
    extra pairs' table, when there is one, is checked too, and recorded with the extra pairs)."""
    names = list(summary["names"])
    path = Path(summary["descriptors"])
    if source is None:
        raise UserError(
            f"a final model that reads {', '.join(names)} records how prediction computes it: "
            "train it with the config whose engine made the descriptor table "
            "(`pairfactory train --config ...`; from Python pass input_source, see train_final)"
        )
    system_ids = {system_id_for(a, b) for a, b in zip(table.solute_smiles, table.solvent_smiles)}
    paths = [path] + (
        [Path(summary["extra_descriptors"])] if "extra_descriptors" in summary else []
    )
    rows = pd.concat([_engine_rows(p, system_ids) for p in paths], ignore_index=True)
    if rows.empty:
        raise UserError(
            f"descriptor table {path} has no row for any of the {len(system_ids)} pairs of the "
            "table: is it another dataset's? (`pairfactory solvation --dataset ...`)"
        )
    tags = sorted(set(rows["engine_tag"].dropna()))
    if tags != [source["engine_tag"]]:
        raise UserError(
            f"descriptor table(s) {', '.join(map(str, paths))} hold geometries of engine tag(s) "
            f"{tags or 'none'}, but the config's engine is {source['engine_tag']}: prediction "
            "would compute other values than the model learned from. Train with the config that "
            "made the tables, or rebuild them with this config (`pairfactory solvation`)"
        )
    xtb_versions = sorted(set(rows["xtb_version"].dropna())) if "xtb_version" in rows else []
    return {
        "names": names,
        "descriptors": {
            "path": str(path),
            "sha256": file_sha256(path),
            "xtb_versions": xtb_versions,
        },
        "qm": {"engine": dict(source["engine"]), "engine_tag": str(source["engine_tag"])},
    }


def _engine_rows(path: Path, system_ids: set[str]) -> pd.DataFrame:
    """The rows of descriptor table ``path`` for ``system_ids``, which must say their engine."""
    descriptors = read_descriptors(path).reset_index()  # read once per process and version
    if "engine_tag" not in descriptors.columns:
        raise UserError(
            f"descriptor table {path} does not say which QM engine made its geometries (no "
            "engine_tag column: an older pairfactory wrote it); rebuild it with `pairfactory "
            "solvation`, or in the workflow `snakemake --forcerun solvation` (its values are "
            "cached, so this takes seconds)"
        )
    return descriptors[descriptors["system_id"].isin(system_ids)]


def _train_member(
    model_name: str,
    hparams: dict[str, Any],
    settings: TrainSettings,
    member: int,
    out_dir: Path,
    train_ds: PairGraphDataset,
    valid_ds: PairGraphDataset,
    final: FinalSettings,
    fingerprint: dict[str, Any],
    progress: bool,
) -> tuple[MemberRecord, pd.DataFrame, dict[str, Any]]:
    """One member, resumed from its checkpoint or skipped when finished."""
    folder = member_dir(out_dir, member)
    record_path = folder / MEMBER_FILE
    predictions_path = folder / "holdout.parquet"
    if record_path.is_file() and predictions_path.is_file():
        saved = json.loads(record_path.read_text())
        if saved.get("fingerprint") == fingerprint and "hparams" in saved:
            log.info("member %d: already trained (%s), skipping", member, record_path)
            built = saved.pop("hparams")
            saved.pop("fingerprint")
            return MemberRecord(**saved), pd.read_parquet(predictions_path), built
        log.info(
            "member %d: trained with other settings or an older version, training again", member
        )
    seed_everything(settings.seed)  # before building: initial weights depend on the seed
    model = build_model(model_name, **hparams)
    built = dict(getattr(model, "hparams", hparams))  # resolved: sizes that follow the input
    folder.mkdir(parents=True, exist_ok=True)
    result = train_model(
        model,
        train_ds,
        valid_ds,
        None,
        settings,
        logger=log,
        progress=progress,
        checkpoint=Checkpointing(
            path=folder / CHECKPOINT_FILE,
            every_s=final.checkpoint_every_s,
            fingerprint=fingerprint,
        ),
    )
    predictions = result.predictions[result.predictions["role"] == "valid"].reset_index(drop=True)
    sigma_scale = None
    if "y_std" in predictions:
        sigma_scale = fit_sigma_scale(
            predictions["y_true"], predictions["y_pred"], predictions["y_std"]
        )
        predictions["y_std"] = predictions["y_std"] * sigma_scale
    record = MemberRecord(
        member=member,
        seed=settings.seed,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        holdout_rmse=result.best_valid_rmse,
        target_mean=result.target_scale.mean,
        target_std=result.target_scale.std,
        sigma_scale=sigma_scale,
        seconds=result.seconds,
    )
    save_weights(result.best_state_dict, folder / WEIGHTS_FILE)
    atomic_write_text(folder / HISTORY_FILE, result.history_frame().to_csv(index=False))
    atomic_write(predictions_path, lambda tmp: predictions.to_parquet(tmp, index=False))
    atomic_write_text(
        record_path,
        json.dumps(
            {**asdict(record), "hparams": built, "fingerprint": fingerprint},
            indent=2,
            sort_keys=True,
        )
        + "\n",
    )
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)  # the member is done; weights.pt holds it
    log.info(
        "member %d (seed %d): holdout RMSE %.4g at epoch %d of %d",
        member,
        settings.seed,
        result.best_valid_rmse,
        result.best_epoch,
        result.epochs_run,
    )
    return record, predictions, built


def _ensemble_holdout(
    members: list[pd.DataFrame],
    records: list[MemberRecord],
    valid_ds: PairGraphDataset,
    train_ds: PairGraphDataset,
) -> tuple[pd.DataFrame, SigmaCalibration | None]:
    """The members' holdout predictions combined the way ``Predictor`` combines them, and the
    calibration of their predictive σ (members' σ and spread together) fitted on the holdout,
    growing with each holdout solute's novelty against the training solutes: the σ a fold of
    ``pairfactory evaluate`` scores, calibrated the same way."""
    index = members[0]["index"].to_numpy()
    for frame in members[1:]:
        if not np.array_equal(frame["index"].to_numpy(), index):
            raise AssertionError("ensemble members predicted the holdout in different orders")
    own_sigma = all(record.sigma_scale is not None for record in records)
    combined = combine_members(
        np.stack([m["y_pred"].to_numpy() for m in members]),
        # each member's holdout σ was saved calibrated alone: back to what the model gave
        np.stack(
            [m["y_std"].to_numpy() / r.sigma_scale for m, r in zip(members, records, strict=True)]
        )
        if own_sigma
        else None,
    )
    y_true = members[0]["y_true"].to_numpy()
    sigma = predictive_sigma(combined)
    combined.pop("y_std", None)
    rows = index.astype(np.int64)
    holdout_solutes = valid_ds.pairs_df["solute_smiles"].to_numpy(dtype=object)[rows]
    train_solutes = train_ds.pairs_df["solute_smiles"].to_numpy(dtype=object)
    similarity = nearest_training_similarity(
        list(holdout_solutes), train_solutes[[item.index for item in train_ds.items]]
    )
    calibration = None
    if sigma is not None:
        calibration = fit_sigma_calibration(y_true, combined["y_pred"], sigma, similarity)
        combined["y_std"] = calibration.apply(sigma, similarity)
    pair_ids = valid_ds.pairs_df["pair_id"].to_numpy(dtype=object)[rows]
    frame = pd.DataFrame({"pair_id": pair_ids, "y_true": y_true, **combined})
    frame["solute_similarity"] = similarity
    return frame, calibration


def _training_molecules(table: pd.DataFrame, cache: GraphCache) -> pd.DataFrame:
    """The canonical SMILES of the pairs a model learned from (featurizable ones only)."""
    rows = []
    failures = cache.failures
    for role, column in (("solute", "solute_smiles"), ("solvent", "solvent_smiles")):
        for smiles in sorted(set(table[column])):
            if smiles not in failures:
                rows.append({"role": role, "smiles": smiles})
    return pd.DataFrame(rows, columns=["role", "smiles"])


def software_versions() -> dict[str, str]:
    import dgl
    import rdkit
    import torch

    return {
        "pairfactory": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dgl": dgl.__version__,
        "rdkit": rdkit.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
