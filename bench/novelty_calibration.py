"""Does growing σ with the solute's novelty calibrate better? Refits both calibrations of
``pairfactory.ml.uncertainty`` on the saved folds of ``pairfactory evaluate`` and scores them on
the folds' test pairs (prints tables).

Per fold of each model: the model's own σ (``y_std_uncalibrated`` of ``predictions.parquet``), each
solute's Tanimoto similarity to its nearest training solute (the fold's ``solute_similarity``
column, or computed from ``--pairs`` for folds saved before it existed), then two calibrations
fitted on the validation pairs only:

- ``scale``: one factor on σ (what evaluate did before the novelty term);
- ``scale + novelty``: σ² = (s σ)² + (c (1 − similarity))² (what evaluate does now);
- with ``--powers``, also ``scale + novelty^p``: σ² = (s σ)² + (c (1 − similarity)^p)², a term
  that grows more steeply for the least similar solutes.

Printed per model: the test NLL and 95 % coverage pooled over the folds, for all test pairs and
split by the extrapolation flag's similarity threshold (below 0.3: "novel"); the fitted c; the
95 % coverage by similarity band; and the paired differences in per-fold test NLL (corrected
resampled t-test, as compare_folds): the linear term against the factor alone, and each steeper
term against the linear one.

example:
  .venv/bin/python bench/novelty_calibration.py --results results/mnsol_extra/compare \\
      --dataset mnsol --target dg_solv_kcal_mol --models twin probpair_bilinear \\
      --pairs results/pairs/mnsol/dg_solv_kcal_mol.parquet
  # a steeper novelty term, (1 − similarity)^2 and ^3, against the linear one
  .venv/bin/python bench/novelty_calibration.py --results results/mnsol_extra/compare \\
      --dataset mnsol --target dg_solv_kcal_mol --models twin --powers 2 3 \\
      --pairs results/pairs/mnsol/dg_solv_kcal_mol.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from compare_folds import SIMILARITY_EDGES, print_table
from pairfactory.ml.applicability import DEFAULT_MIN_SOLUTE_SIMILARITY, nearest_training_similarity
from pairfactory.ml.statistics import corrected_resampled_t
from pairfactory.ml.uncertainty import (
    SigmaCalibration,
    coverage,
    fit_sigma_calibration,
    fit_sigma_scale,
    gaussian_nll,
)

# similarity bands of the coverage table: compare_folds' (the flag's threshold first), then the
# solutes whose fingerprint equals a training solute's apart
BANDS = (0.0, *SIMILARITY_EDGES, 0.999, 1.001)


def method_name(power: float | None) -> str:
    """The calibration's row label: the factor alone (None), the linear term (1), a steeper one."""
    if power is None:
        return "scale"
    return "scale + novelty" if power == 1 else f"scale + novelty^{power:g}"


def fold_similarity(predictions: pd.DataFrame, solutes: pd.Series | None) -> np.ndarray:
    """Each row's solute similarity to the fold's training solutes: the fold's own column, else
    computed from the pair table's SMILES (``solutes``: pair_id → solute SMILES)."""
    if "solute_similarity" in predictions:
        return predictions["solute_similarity"].to_numpy(dtype=np.float64)
    if solutes is None:
        raise SystemExit(
            "these folds were saved without solute_similarity: give --pairs, the pair table they "
            "were trained on, for the SMILES"
        )
    missing = ~predictions["pair_id"].isin(solutes.index)
    if missing.any():
        raise SystemExit(
            f"{int(missing.sum())} predicted pairs have no row in --pairs: is it the table these "
            "folds were trained on? (Folds trained with extra pairs, saved before folds kept "
            "solute_similarity, cannot be scored from one table.)"
        )
    smiles = predictions["pair_id"].map(solutes).tolist()
    train = predictions["role"].to_numpy() == "train"
    return nearest_training_similarity(smiles, [s for s, t in zip(smiles, train) if t])


def score_fold(
    predictions: pd.DataFrame, similarity: np.ndarray, powers: tuple[float, ...] = ()
) -> list[dict]:
    """The calibrations fitted on the fold's validation rows, applied to its test rows: the
    factor alone, the linear novelty term, and one with (1 − similarity)^p per ``powers``."""
    if "y_std_uncalibrated" not in predictions:
        raise SystemExit("the folds have no σ (y_std_uncalibrated): a probabilistic model's folds")
    roles = predictions["role"].to_numpy()
    y_true = predictions["y_true"].to_numpy(dtype=np.float64)
    y_pred = predictions["y_pred"].to_numpy(dtype=np.float64)
    y_std = predictions["y_std_uncalibrated"].to_numpy(dtype=np.float64)
    valid, test = roles == "valid", roles == "test"
    rows = []
    for power in (None, 1.0, *(p for p in powers if p != 1)):
        if power is None:
            calibration = SigmaCalibration(
                fit_sigma_scale(y_true[valid], y_pred[valid], y_std[valid])
            )
            steep = similarity
        else:  # given 1 − (1 − similarity)^p as the similarity, the term is c (1 − similarity)^p
            steep = 1.0 - (1.0 - similarity) ** power
            calibration = fit_sigma_calibration(
                y_true[valid], y_pred[valid], y_std[valid], steep[valid]
            )
        sigma = calibration.apply(y_std[test], steep[test])
        rows.append(
            {
                "method": method_name(power),
                "novelty_sigma": calibration.novelty_sigma,
                "y_true": y_true[test],
                "y_pred": y_pred[test],
                "y_std": sigma,
                "similarity": similarity[test],
            }
        )
    return rows


def _pooled(rows: list[dict], mask: np.ndarray | None = None) -> tuple[int, float, float]:
    """n, Gaussian NLL and 95 % coverage of the folds' test pairs pooled (those in ``mask``)."""
    arrays = {k: np.concatenate([r[k] for r in rows]) for k in ("y_true", "y_pred", "y_std")}
    if mask is None:
        mask = np.ones(len(arrays["y_true"]), dtype=bool)
    if not mask.any():
        return 0, float("nan"), float("nan")
    y_true, y_pred, y_std = (arrays[k][mask] for k in ("y_true", "y_pred", "y_std"))
    return (
        int(mask.sum()),
        gaussian_nll(y_true, y_pred, y_std),
        coverage(y_true, y_pred, y_std, 0.95),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", required=True, help="the evaluate results root")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--models", nargs="+", required=True, help="model folders with a σ")
    parser.add_argument("--split", default="random")
    parser.add_argument("--pairs", help="the pair table (for folds saved without similarity)")
    parser.add_argument(
        "--powers",
        nargs="+",
        type=float,
        default=[],
        metavar="P",
        help="also fit a novelty term in (1 − similarity)^P for each P (e.g. 2 3)",
    )
    args = parser.parse_args(argv)
    if any(p <= 0 for p in args.powers):
        parser.error("--powers must be > 0 (1 is the linear term, printed anyway)")
    args.powers = sorted(set(args.powers))

    solutes = None
    if args.pairs:
        table = pd.read_parquet(args.pairs).drop_duplicates("pair_id")
        solutes = table.set_index("pair_id")["solute_smiles"]
    root = Path(args.results) / args.dataset / args.target
    for model in args.models:
        folds = sorted(p.parent for p in (root / model / args.split).glob("r*-f*/metrics.json"))
        if not folds:
            raise SystemExit(f"no finished fold under {root / model / args.split}")
        per_method: dict[str, list[dict]] = {}
        for fold in folds:
            predictions = pd.read_parquet(fold / "predictions.parquet")
            similarity = fold_similarity(predictions, solutes)
            for row in score_fold(predictions, similarity, tuple(args.powers)):
                per_method.setdefault(row["method"], []).append(row)
        threshold = DEFAULT_MIN_SOLUTE_SIMILARITY
        print(f"\n{model}: {len(folds)} folds, calibrations fitted on each fold's validation set\n")
        table_rows = [
            (
                "calibration",
                "test NLL",
                "95 % coverage",
                f"novel (< {threshold}): n",
                "NLL",
                "coverage",
                "others: NLL",
                "coverage",
                "c (median over folds)",
            )
        ]
        # every calibration scores the same test pairs in the same order
        similarity = np.concatenate([r["similarity"] for r in per_method["scale"]])
        novel = similarity < threshold
        for method, rows in per_method.items():
            _, nll, cov = _pooled(rows)
            n_novel, nll_novel, cov_novel = _pooled(rows, novel)
            _, nll_other, cov_other = _pooled(rows, ~novel)
            table_rows.append(
                (
                    method,
                    f"{nll:.3f}",
                    f"{cov:.3f}",
                    str(n_novel),
                    f"{nll_novel:.3f}",
                    f"{cov_novel:.2f}",
                    f"{nll_other:.3f}",
                    f"{cov_other:.3f}",
                    "–"
                    if method == "scale"
                    else f"{np.median([r['novelty_sigma'] for r in rows]):.3f}",
                )
            )
        print_table(table_rows)
        print("\n95 % coverage by similarity to the nearest training solute (test pairs)\n")
        print_table(_band_rows(per_method, similarity))
        fold_nll = {
            method: np.array([gaussian_nll(r["y_true"], r["y_pred"], r["y_std"]) for r in rows])
            for method, rows in per_method.items()
        }
        metrics = [pd.read_json(fold / "metrics.json", typ="series") for fold in folds]
        n_train = float(np.mean([m["n_train"] for m in metrics]))
        n_test = float(np.mean([m["n_valid"] + m["n_test"] for m in metrics]))
        for method in list(fold_nll)[1:]:
            # the linear term against the factor alone, the steeper ones against the linear
            before = "scale" if method == "scale + novelty" else "scale + novelty"
            d = fold_nll[method] - fold_nll[before]
            if len(d) > 1:
                half, _, p = corrected_resampled_t(d, n_train, n_test)
                print(
                    f"\nper-fold test NLL, {method} − {before}: {d.mean():+.3f} "
                    f"[{d.mean() - half:+.3f}, {d.mean() + half:+.3f}], p = {p:.3f}, "
                    f"lower in {int((d < 0).sum())} of {len(d)} folds"
                )
    return 0


def _band_rows(per_method: dict[str, list[dict]], similarity: np.ndarray) -> list[tuple[str, ...]]:
    """One row per calibration: the 95 % coverage of the pooled test pairs in each similarity
    band (``similarity``: theirs, pooled alike)."""
    bands = list(zip(BANDS[:-1], BANDS[1:]))
    # the last band is similarity 1: a training solute, or one with the same fingerprint
    labels = [f"{lo:.1f}–{hi:.1f}" for lo, hi in bands[:-2]] + [f"{bands[-2][0]:.1f}–1", "1"]
    masks = [(similarity >= lo) & (similarity < hi) for lo, hi in bands]
    rows = [("calibration", *(f"{label}: n = {int(m.sum())}" for label, m in zip(labels, masks)))]
    for method, fold_rows in per_method.items():
        cells = [f"{_pooled(fold_rows, m)[2]:.3f}" if m.any() else "–" for m in masks]
        rows.append((method, *cells))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
