"""Information gate (issue 10, §0): do the noisy QM samples and xtb's ALPB ΔG_solv explain what a
2D model misses?

For each dataset (pair table × shards), on the project's own 5-fold random split (seed 0, the
whole held-out part of a fold, valid + test, used as out-of-fold):

a. out-of-fold (OOF) predictions of two 2D baselines: CIGIN at batch 32 (read from the
   ``pairfactory evaluate`` fold folders given by ``--cigin-dir``) and a fingerprint random forest
   (Morgan counts + RDKit 2D descriptors of solute, and solvent for MNSol) trained here;
b. per feature: Pearson / Spearman r with experiment and with each baseline's OOF residual, and the
   partial correlation with experiment given the baseline's prediction (Fisher-z 95 % CI);
c. residual models: inside each outer training part only, a ridge and a small gradient-boosting
   model of the residual on [baseline prediction + feature group], applied to the held-out part.
   Their training residuals are out-of-fold too: for the forest, an inner k-fold inside the outer
   training part (fully nested); for CIGIN, the other folds' OOF predictions (stacking; those
   models saw the outer held-out labels in training, a mild second-order leak, see docs).
   Plus a ceiling: the forest given the features as extra inputs.
   RMSE differences get a per-fold std and a paired bootstrap 95 % CI over pairs.

Writes ``{out}/{dataset}/features.csv``, ``feature_correlations.csv``, ``residual_models.csv``,
``per_fold.csv``, ``oof_predictions.csv`` (MNSol-derived files stay under the git-ignored
results/), ``{out}/info_gate.log``, and prints the tables. Seeded throughout.

    .venv/bin/python bench/info_gate.py --datasets freesolv freesolv_cgib mnsol
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import RandomForestRegressor
from tqdm.auto import tqdm

from pairfactory.ml.sample_features import (
    CONTACT_COLUMNS,
    ENERGY_COLUMNS,
    read_sample_contacts,
    summarize_systems,
)
from pairfactory.ml.splits import FoldSplit, make_splits
from pairfactory.ml.statistics import partial_correlation
from pairfactory.pairs.registry import samples_dataset
from pairfactory.qm.parts import PartsCache
from pairfactory.qm.plan import system_id_for
from pairfactory.qm.shards import shard_paths
from pairfactory.qm.solvation import DEFAULT_SOLVATION_CACHE, SolvationCache

log = logging.getLogger("info_gate")

# dataset: its target; the samples are read from the shards of samples_dataset(dataset)
TARGETS = {
    "freesolv": "dg_hydration_kcal_mol",
    "freesolv_cgib": "dg_hydration_kcal_mol",
    "mnsol": "dg_solv_kcal_mol",
}
ALPB_COLUMN = "dg_solv_alpb_kcal_mol"
GROUPS = {
    "energy": ENERGY_COLUMNS,
    "contacts": CONTACT_COLUMNS,
    "samples": ENERGY_COLUMNS + CONTACT_COLUMNS,
    "alpb": [ALPB_COLUMN],
    "all": ENERGY_COLUMNS + CONTACT_COLUMNS + [ALPB_COLUMN],
}
N_FOLDS = 5


@dataclass(frozen=True)
class ForestSettings:
    n_estimators: int = 300
    max_features: float = 0.3
    fp_bits: int = 2048
    inner_folds: int = 4


# ---------------------------------------------------------------------------------------------
# data


def load_frame(dataset: str, args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pair table joined with the per-system features, and the per-sample table."""
    pairs_path = Path(args.pairs_dir) / dataset / f"{TARGETS[dataset]}.parquet"
    pairs = pd.read_parquet(pairs_path).reset_index(drop=True)
    shards_dir = Path(args.shards_root) / samples_dataset(dataset) / args.engine_tag
    pairs["system_id"] = [
        system_id_for(u, v) for u, v in zip(pairs.solute_smiles, pairs.solvent_smiles, strict=True)
    ]
    samples = read_sample_contacts(shard_paths(shards_dir), progress=True)
    feats = summarize_systems(samples)
    missing = set(pairs.system_id) - set(feats.system_id)
    log.info(
        "%s: %d pairs, %d systems in shards (%d samples, %d ok, %d failed, %d QC-flagged); "
        "%d pairs without samples",
        dataset,
        len(pairs),
        len(feats),
        feats.n_samples.sum(),
        feats.n_ok.sum(),
        feats.n_failed.sum(),
        feats.n_qc_flagged.sum(),
        len(pairs[pairs.system_id.isin(missing)]),
    )
    frame = pairs.merge(
        feats.drop(columns=["solute_smiles", "solvent_smiles"]), on="system_id", how="left"
    )
    assert len(frame) == len(pairs) and (frame.pair_id.values == pairs.pair_id.values).all()
    frame[ALPB_COLUMN] = alpb_values(frame, args)
    frame["y"] = frame["value"].astype(float)
    return frame, samples


def _no_engine():
    raise RuntimeError("the gate reads optimized parts; it does not optimize molecules")


def alpb_values(frame: pd.DataFrame, args: argparse.Namespace) -> np.ndarray:
    """xtb GFN2/ALPB ΔG_solv of each solute in its solvent at the solute's part geometry."""
    cache = SolvationCache(args.solvation_cache, timeout_s=120.0)
    parts = PartsCache(
        args.parts_root, engine=_no_engine, engine_tag=args.engine_tag, timeout_s=None
    )
    values: dict[tuple[str, str], float] = {}
    statuses: dict[str, int] = {}
    keys = sorted(set(zip(frame.solute_smiles, frame.solvent_smiles, strict=True)))
    for solute, solvent in tqdm(keys, desc="ALPB ΔG_solv", unit="pair"):
        part = parts.cached(solute, peek=True)
        if part is None:
            statuses["no part"] = statuses.get("no part", 0) + 1
            values[(solute, solvent)] = math.nan
            continue
        if part.status != "ok":
            statuses["part not ok"] = statuses.get("part not ok", 0) + 1
            values[(solute, solvent)] = math.nan
            continue
        result = cache.get(
            solute,
            solvent,
            part.atomic_numbers,
            part.positions_angstrom,
            charge=part.charge,
            uhf=part.multiplicity - 1,
        )
        statuses[result.status] = statuses.get(result.status, 0) + 1
        values[(solute, solvent)] = (
            math.nan if result.dg_solv_kcal_mol is None else result.dg_solv_kcal_mol
        )
    log.info(
        "ALPB: %d (solute, solvent) pairs: %s; xtb runs %d, cache hits %d",
        len(keys),
        statuses,
        cache.computed,
        cache.loaded,
    )
    return np.array([values[(u, v)] for u, v in zip(frame.solute_smiles, frame.solvent_smiles)])


def fingerprint_matrix(frame: pd.DataFrame, fp_bits: int) -> np.ndarray:
    """Morgan (radius 2, counts) + RDKit 2D descriptors of the solute, and of the solvent when the
    table has more than one solvent."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import Descriptors, rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=fp_bits)
    memo: dict[str, np.ndarray] = {}

    def vec(smiles: str) -> np.ndarray:
        if smiles not in memo:
            mol = Chem.MolFromSmiles(smiles)
            fp = gen.GetCountFingerprintAsNumPy(mol).astype(float)
            desc = np.array(list(Descriptors.CalcMolDescriptors(mol).values()), dtype=float)
            memo[smiles] = np.concatenate([fp, desc])
        return memo[smiles]

    blocks = [np.stack([vec(s) for s in tqdm(frame.solute_smiles, desc="solute FP", unit="mol")])]
    if frame.solvent_smiles.nunique() > 1:
        blocks.append(np.stack([vec(s) for s in frame.solvent_smiles]))
    x = np.concatenate(blocks, axis=1)
    # A few descriptors overflow (Ipc) or are undefined for tiny molecules.
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(x, -1e6, 1e6)


# ---------------------------------------------------------------------------------------------
# models


def _impute(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training-part medians for NaN, plus a missing-indicator column per column that has NaN in
    the training part (MNSol: solvents without ALPB parameters)."""
    med = np.nanmedian(train, axis=0)
    med = np.where(np.isnan(med), 0.0, med)
    has_nan = np.isnan(train).any(axis=0)

    def fill(x: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(x), med, x)
        return np.concatenate([filled, np.isnan(x[:, has_nan]).astype(float)], axis=1)

    return fill(train), fill(other)


def fit_predict(
    kind: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, seed: int
) -> np.ndarray:
    """The two pre-declared residual models (no tuning on held-out data)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_tr, x_te = _impute(x_tr, x_te)
    if kind == "ridge":
        # alpha by efficient leave-one-out on the training part only
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 25)))
    elif kind == "gbm":
        model = HistGradientBoostingRegressor(
            max_iter=150,
            learning_rate=0.05,
            max_depth=3,
            min_samples_leaf=20,
            l2_regularization=1.0,
            random_state=seed,
        )
    else:
        raise ValueError(kind)
    model.fit(x_tr, y_tr)
    return model.predict(x_te)


def forest(settings: ForestSettings, seed: int) -> RandomForestRegressor:
    return RandomForestRegressor(
        n_estimators=settings.n_estimators,
        max_features=settings.max_features,
        n_jobs=1,
        random_state=seed,
    )


def forest_predictions(
    x: np.ndarray,
    feats: pd.DataFrame,
    y: np.ndarray,
    folds: list[FoldSplit],
    settings: ForestSettings,
    seed: int,
) -> dict[str, np.ndarray]:
    """OOF predictions of the forest (outer), its inner-OOF predictions on each outer training
    part (for the residual models), and the ceiling forests with each feature group as inputs."""
    from sklearn.model_selection import KFold

    n = len(y)
    outer = np.full(n, np.nan)
    # inner[f][i]: inner-OOF prediction of training row i of outer fold f (NaN elsewhere)
    inner = np.full((len(folds), n), np.nan)
    ceilings = {g: np.full(n, np.nan) for g in GROUPS}
    jobs = len(folds) * (2 + settings.inner_folds + len(GROUPS))
    bar = tqdm(total=jobs, desc="forests", unit="fit")
    for f, split in enumerate(folds):
        held = np.concatenate([split.valid, split.test])
        tr = split.train
        outer[held] = forest(settings, seed).fit(x[tr], y[tr]).predict(x[held])
        bar.update(2)
        kf = KFold(settings.inner_folds, shuffle=True, random_state=seed)
        for in_tr, in_te in kf.split(tr):
            model = forest(settings, seed).fit(x[tr[in_tr]], y[tr[in_tr]])
            inner[f, tr[in_te]] = model.predict(x[tr[in_te]])
            bar.update(1)
        for group, columns in GROUPS.items():
            xf_tr, xf_te = _impute(
                feats[columns].to_numpy(float)[tr], feats[columns].to_numpy(float)[held]
            )
            model = forest(settings, seed).fit(np.hstack([x[tr], xf_tr]), y[tr])
            ceilings[group][held] = model.predict(np.hstack([x[held], xf_te]))
            bar.update(1)
    bar.close()
    out = {"outer": outer, **{f"ceiling_{g}": v for g, v in ceilings.items()}}
    for f in range(len(folds)):
        out[f"inner_{f}"] = inner[f]
    return out


def cigin_oof(frame: pd.DataFrame, folds: list[FoldSplit], cigin_dir: Path) -> np.ndarray | None:
    """OOF predictions of CIGIN from its 5 fold folders; None if any fold is missing."""
    pred = np.full(len(frame), np.nan)
    index = pd.Series(np.arange(len(frame)), index=frame.pair_id)
    if not index.index.is_unique:
        raise SystemExit("pair_id is not unique in the pair table")
    for f, split in enumerate(folds):
        path = cigin_dir / f"r0-f{f}" / "predictions.parquet"
        if not (cigin_dir / f"r0-f{f}" / "metrics.json").is_file():
            log.warning("CIGIN fold %d not finished (%s)", f, path.parent)
            return None
        p = pd.read_parquet(path)
        rows = index.loc[p.pair_id].to_numpy()
        for role, part in (("valid", split.valid), ("test", split.test), ("train", split.train)):
            got = np.sort(rows[(p.role == role).to_numpy()])
            # The harness must have used the very same folds as this script.
            if not np.array_equal(got, part):
                raise SystemExit(f"CIGIN fold {f}: role {role} differs from make_splits' fold")
        held = (p.role != "train").to_numpy()
        pred[rows[held]] = p.y_pred.to_numpy()[held]
        assert np.allclose(p.y_true.to_numpy()[held], frame.y.to_numpy()[rows[held]])
    return pred


# ---------------------------------------------------------------------------------------------
# statistics


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def feature_correlations(
    frame: pd.DataFrame, baselines: dict[str, np.ndarray], columns: list[str]
) -> pd.DataFrame:
    y = frame.y.to_numpy(float)
    rows = []
    for column in columns:
        x = frame[column].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 10 or np.std(x[ok]) == 0:
            continue
        row = {
            "feature": column,
            "n": int(ok.sum()),
            "pearson_y": stats.pearsonr(x[ok], y[ok])[0],
            "spearman_y": stats.spearmanr(x[ok], y[ok])[0],
        }
        for name, pred in baselines.items():
            m = ok & np.isfinite(pred)
            resid = y[m] - pred[m]
            row[f"pearson_resid_{name}"] = stats.pearsonr(x[m], resid)[0]
            row[f"spearman_resid_{name}"] = stats.spearmanr(x[m], resid)[0]
            # partial r(x, y | pred): correlate what is left of x and y after regressing on pred
            partial, lo, hi, _ = partial_correlation(x[m], y[m], [pred[m]])
            row[f"partial_r_{name}"] = partial
            row[f"partial_r_{name}_ci95"] = f"[{lo:+.2f}, {hi:+.2f}]"
            # Does a sample feature add anything once ALPB ΔG_solv is known too?
            alpb = frame[ALPB_COLUMN].to_numpy(float)
            m2 = m & np.isfinite(alpb)
            if column != ALPB_COLUMN and m2.sum() >= 10:
                partial2, lo, hi, _ = partial_correlation(x[m2], y[m2], [pred[m2], alpb[m2]])
                row[f"partial_r_{name}_alpb"] = partial2
                row[f"partial_r_{name}_alpb_ci95"] = f"[{lo:+.2f}, {hi:+.2f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def signal_vs_samples(
    frame: pd.DataFrame, samples: pd.DataFrame, baselines: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Would more samples help? The energy summaries from the first m samples (k < m) of every
    system: r with experiment and partial r given each baseline's OOF prediction."""
    y = frame.y.to_numpy(float)
    rows = []
    n_k = int(samples.k.max()) + 1
    for m in sorted({1, 2, 4, n_k} & set(range(1, n_k + 1))):
        feats = summarize_systems(samples[samples.k < m]).set_index("system_id")
        for column in ("e_int_min_kcal_mol", "e_int_boltzmann_kcal_mol", "e_int_median_kcal_mol"):
            x = feats[column].reindex(frame.system_id).to_numpy(float)
            ok = np.isfinite(x)
            row = {"m_samples": m, "feature": column, "pearson_y": stats.pearsonr(x[ok], y[ok])[0]}
            for name, pred in baselines.items():
                row[f"partial_r_{name}"] = partial_correlation(x[ok], y[ok], [pred[ok]])[0]
            rows.append(row)
    return pd.DataFrame(rows)


def bootstrap_diff(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int, n_boot: int = 2000
) -> tuple[float, float]:
    """Paired bootstrap (over pairs) 95 % interval of RMSE(b) − RMSE(a)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = np.empty(n_boot)
    ea, eb = (a - y) ** 2, (b - y) ** 2
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        diffs[i] = math.sqrt(eb[idx].mean()) - math.sqrt(ea[idx].mean())
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def residual_models(
    frame: pd.DataFrame,
    folds: list[FoldSplit],
    baseline: str,
    oof: np.ndarray,
    train_pred_for_fold: Callable[[int], np.ndarray],
    seed: int,
) -> tuple[list[dict], list[dict]]:
    """Baseline + correction for every (group, model kind); returns summary and per-fold rows."""
    y = frame.y.to_numpy(float)
    summary, per_fold = [], []
    variants = [(g, kind) for g in GROUPS for kind in ("ridge", "gbm")]
    held_all = np.concatenate([np.concatenate([s.valid, s.test]) for s in folds])
    test_all = np.concatenate([s.test for s in folds])
    base_rmse = rmse(oof[held_all], y[held_all])
    summary.append(
        {
            "baseline": baseline,
            "model": "baseline",
            "group": "-",
            "rmse_oof": base_rmse,
            "rmse_test_half": rmse(oof[test_all], y[test_all]),
        }
    )
    for f, split in enumerate(folds):
        held = np.concatenate([split.valid, split.test])
        per_fold.append(
            {
                "baseline": baseline,
                "model": "baseline",
                "group": "-",
                "fold": f,
                "rmse": rmse(oof[held], y[held]),
            }
        )
    for group, kind in tqdm(variants, desc=f"residual models ({baseline})", unit="model"):
        corrected = np.full(len(y), np.nan)
        columns = GROUPS[group]
        feats = frame[columns].to_numpy(float)
        for f, split in enumerate(folds):
            tr, held = split.train, np.concatenate([split.valid, split.test])
            p_tr = train_pred_for_fold(f)[tr]
            x_tr = np.column_stack([p_tr, feats[tr]])
            x_te = np.column_stack([oof[held], feats[held]])
            corrected[held] = oof[held] + fit_predict(kind, x_tr, y[tr] - p_tr, x_te, seed)
            per_fold.append(
                {
                    "baseline": baseline,
                    "model": kind,
                    "group": group,
                    "fold": f,
                    "rmse": rmse(corrected[held], y[held]),
                }
            )
        lo, hi = bootstrap_diff(y[held_all], oof[held_all], corrected[held_all], seed)
        fold_diffs = [
            pf["rmse"] - pb["rmse"]
            for pf, pb in zip(per_fold[-len(folds) :], per_fold[: len(folds)], strict=True)
        ]
        summary.append(
            {
                "baseline": baseline,
                "model": f"+{kind}",
                "group": group,
                "rmse_oof": rmse(corrected[held_all], y[held_all]),
                "rmse_test_half": rmse(corrected[test_all], y[test_all]),
                "delta_rmse": rmse(corrected[held_all], y[held_all]) - base_rmse,
                "delta_fold_std": float(np.std(fold_diffs, ddof=1)),
                "delta_boot_ci95": f"[{lo:+.3f}, {hi:+.3f}]",
            }
        )
    return summary, per_fold


def features_only(frame: pd.DataFrame, folds: list[FoldSplit], seed: int) -> list[dict]:
    """How much of experiment the QM features explain on their own (GBM on features only)."""
    y = frame.y.to_numpy(float)
    held_all = np.concatenate([np.concatenate([s.valid, s.test]) for s in folds])
    test_all = np.concatenate([s.test for s in folds])
    rows = []
    for group, columns in GROUPS.items():
        pred = np.full(len(y), np.nan)
        feats = frame[columns].to_numpy(float)
        for split in folds:
            held = np.concatenate([split.valid, split.test])
            pred[held] = fit_predict("gbm", feats[split.train], y[split.train], feats[held], seed)
        rows.append(
            {
                "baseline": "none",
                "model": "gbm(features only)",
                "group": group,
                "rmse_oof": rmse(pred[held_all], y[held_all]),
                "rmse_test_half": rmse(pred[test_all], y[test_all]),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------


def run_dataset(dataset: str, args: argparse.Namespace) -> None:
    out = Path(args.out_dir) / dataset
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    frame, samples = load_frame(dataset, args)
    folds = make_splits("random", frame.solute_smiles.tolist(), n_folds=N_FOLDS, seed=args.seed)
    fold_of = np.empty(len(frame), dtype=int)
    role = np.empty(len(frame), dtype=object)
    for f, s in enumerate(folds):
        fold_of[np.concatenate([s.valid, s.test])] = f
        role[s.valid], role[s.test] = "valid", "test"
    y = frame.y.to_numpy(float)
    feature_cols = [c for g in ("all",) for c in GROUPS[g]]
    frame[
        [
            "pair_id",
            "solute_smiles",
            "solvent_smiles",
            "y",
            "n_samples",
            "n_ok",
            "n_failed",
            "n_qc_flagged",
            "n_used",
            *feature_cols,
        ]
    ].to_csv(out / "features.csv", index=False)

    settings = ForestSettings(
        n_estimators=args.fp_trees,
        max_features=args.fp_max_features,
        fp_bits=args.fp_bits,
        inner_folds=args.inner_folds,
    )
    cache = (
        out / f"forest_{hashlib.sha256(repr((settings, args.seed)).encode()).hexdigest()[:8]}.npz"
    )
    if cache.is_file():
        rf = dict(np.load(cache))
        log.info("%s: forest predictions from %s", dataset, cache)
    else:
        x = fingerprint_matrix(frame, settings.fp_bits)
        log.info("%s: fingerprint matrix %s, %s", dataset, x.shape, settings)
        rf = forest_predictions(x, frame, y, folds, settings, args.seed)
        np.savez(cache, **rf)

    baselines = {"fp_rf": rf["outer"]}
    train_preds = {"fp_rf": lambda f: rf[f"inner_{f}"]}
    cigin = cigin_oof(frame, folds, Path(args.cigin_dir) / dataset)
    if cigin is not None:
        baselines["cigin_b32"] = cigin
        # stacking: for fold f the training rows' predictions are their own folds' OOF predictions
        train_preds["cigin_b32"] = lambda f: cigin
    else:
        log.warning("%s: CIGIN OOF predictions incomplete: fingerprint baseline only", dataset)

    oof = pd.DataFrame(
        {
            "pair_id": frame.pair_id,
            "fold": fold_of,
            "role": role,
            "y": y,
            **{f"pred_{k}": v for k, v in baselines.items()},
            **{f"pred_fp_rf_{k}": v for k, v in rf.items() if k.startswith("ceiling_")},
        }
    )
    oof.to_csv(out / "oof_predictions.csv", index=False)

    corr = feature_correlations(frame, baselines, feature_cols)
    corr.to_csv(out / "feature_correlations.csv", index=False)
    by_m = signal_vs_samples(frame, samples, baselines)
    by_m.to_csv(out / "signal_vs_samples.csv", index=False)

    summary, per_fold = [], []
    for name, pred in baselines.items():
        s, p = residual_models(frame, folds, name, pred, train_preds[name], args.seed)
        summary += s
        per_fold += p
    held_all = np.concatenate([np.concatenate([s.valid, s.test]) for s in folds])
    test_all = np.concatenate([s.test for s in folds])
    base = rmse(rf["outer"][held_all], y[held_all])
    for group in GROUPS:
        ceil = rf[f"ceiling_{group}"]
        lo, hi = bootstrap_diff(y[held_all], rf["outer"][held_all], ceil[held_all], args.seed)
        fold_diffs = []
        for f, split in enumerate(folds):
            held = np.concatenate([split.valid, split.test])
            r_c, r_b = rmse(ceil[held], y[held]), rmse(rf["outer"][held], y[held])
            fold_diffs.append(r_c - r_b)
            per_fold.append(
                {"baseline": "fp_rf", "model": "ceiling_rf", "group": group, "fold": f, "rmse": r_c}
            )
        summary.append(
            {
                "baseline": "fp_rf",
                "model": "ceiling: rf(FP + features)",
                "group": group,
                "rmse_oof": rmse(ceil[held_all], y[held_all]),
                "rmse_test_half": rmse(ceil[test_all], y[test_all]),
                "delta_rmse": rmse(ceil[held_all], y[held_all]) - base,
                "delta_fold_std": float(np.std(fold_diffs, ddof=1)),
                "delta_boot_ci95": f"[{lo:+.3f}, {hi:+.3f}]",
            }
        )
    summary += features_only(frame, folds, args.seed)
    table = pd.DataFrame(summary)
    table.insert(0, "dataset", dataset)
    table.insert(1, "n_pairs", len(frame))
    table.to_csv(out / "residual_models.csv", index=False)
    pd.DataFrame(per_fold).to_csv(out / "per_fold.csv", index=False)

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(f"\n=== {dataset}: {len(frame)} pairs, 5-fold random split seed {args.seed}, OOF")
        print(table.drop(columns=["dataset", "n_pairs"]).round(3).to_string(index=False))
        shown = ["feature", "n", "pearson_y", "spearman_y"] + [
            c for c in corr.columns if c.startswith(("pearson_resid", "partial_r"))
        ]
        print(f"\n--- {dataset}: feature correlations (OOF)")
        print(corr[shown].round(3).to_string(index=False))
        print(f"\n--- {dataset}: energy summaries from the first m samples per system")
        print(by_m.round(3).to_string(index=False))
    log.info("%s done in %.0f s", dataset, time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["freesolv"], choices=sorted(TARGETS))
    parser.add_argument("--pairs-dir", default="results/pairs")
    parser.add_argument("--shards-root", default="/work/shared/qm/shards")
    parser.add_argument(
        "--engine-tag",
        default="xtb-5bc9618c",
        help="the shards' engine folder under <shards-root>/<dataset whose samples are read>/",
    )
    parser.add_argument(
        "--parts-root",
        default="/work/shared/qm/parts",
        help="the isolated molecules' cache; read from <parts-root>/<engine-tag>/",
    )
    parser.add_argument("--cigin-dir", default="results/info_gate/cigin_b32")
    parser.add_argument("--solvation-cache", default=str(DEFAULT_SOLVATION_CACHE))
    parser.add_argument("--out-dir", default="results/info_gate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fp-trees", type=int, default=ForestSettings.n_estimators)
    parser.add_argument("--fp-max-features", type=float, default=ForestSettings.max_features)
    parser.add_argument("--fp-bits", type=int, default=ForestSettings.fp_bits)
    parser.add_argument("--inner-folds", type=int, default=ForestSettings.inner_folds)
    args = parser.parse_args(argv)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[
            logging.StreamHandler(sys.stderr),
            logging.FileHandler(Path(args.out_dir) / "info_gate.log"),
        ],
    )
    log.info("command: %s", " ".join(sys.argv))
    for dataset in args.datasets:
        run_dataset(dataset, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
