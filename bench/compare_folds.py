"""Paired comparison of models over the same cross-validation folds (prints tables).

Reads the ``metrics.json`` of every (repeat, fold) that all the given models finished under
``<results>/<dataset>/<target>/<model>/<split>/r<repeat>-f<fold>/``. Prints the metric per fold,
then per model: its mean over those folds with the standard deviation over folds (population
std, as ``pairfactory report`` and CGIB's tables), the mean of each repeat, the mean validation
RMSE and, for models with a σ, the mean test NLL, miscalibration area, 68 / 95 % coverage and
Spearman ρ(|error|, σ). Last, for every pair of models (A listed before B): the mean paired
difference B − A, its 95 % interval and p-value from the corrected resampled t-test (Nadeau &
Bengio 2003: the variance of the mean difference is inflated by n_test/n_train because the
training sets of the folds overlap), and in how many folds B won. ``--complete-repeats`` keeps
only repeats whose every fold all models finished (for a run still in progress).

example:
  .venv/bin/python bench/compare_folds.py --results results/tuned_642/evaluate \\
      --dataset freesolv --target dg_hydration_kcal_mol --models probpair_2d probpair cigin
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from pairfactory.ml.statistics import corrected_resampled_t
from pairfactory.ml.tune import read_fold_metrics

# metrics.json keys of the uncertainty summary, as printed
UNCERTAINTY_KEYS = {
    "nll": "test NLL",
    "miscalibration_area": "miscalibration area",
    "coverage_68": "68 % coverage",
    "coverage_95": "95 % coverage",
    "spearman_abs_error_std": "ρ(|error|, σ)",
}


# metrics where a larger value is the better one (for "B better")
HIGHER_IS_BETTER = {"r2", "spearman_abs_error_std"}
# what makes two models' folds of one (repeat, fold) the same test set
SPLIT_FIELDS = ("split", "n_folds", "split_seed")


def fold_metrics(root: Path, model: str, split: str) -> dict[tuple[int, int], dict]:
    found = {}
    for path in sorted((root / model / split).glob("r*-f*/metrics.json")):
        metrics = read_fold_metrics(path)
        found[(metrics["repeat"], metrics["fold"])] = metrics
    return found


def shared_folds(
    per_model: list[dict[tuple[int, int], dict]], complete_repeats: bool
) -> list[tuple[int, int]]:
    """(repeat, fold) keys every model finished; with ``complete_repeats`` only whole repeats
    (as many folds as the folds record)."""
    keys = sorted(set.intersection(*(set(found) for found in per_model)))
    if not complete_repeats or not keys:
        return keys
    n_folds = {per_model[0][key]["n_folds"] for key in keys}
    if len(n_folds) != 1:
        raise SystemExit(f"the folds mix k-fold sizes {sorted(n_folds)}; compare one k at a time")
    k = n_folds.pop()
    whole = {r for r in {key[0] for key in keys} if sum(key[0] == r for key in keys) == k}
    return [key for key in keys if key[0] in whole]


def _mean(found: dict[tuple[int, int], dict], keys: list[tuple[int, int]], name: str) -> float:
    values = [found[key].get(name) for key in keys]
    return float(np.mean(values)) if all(v is not None for v in values) else float("nan")


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [f"{row[0]:<{widths[0]}}"] + [
            f"{cell:>{width}}" for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", default="results/evaluate")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument(
        "--models", nargs="+", required=True, help="two or more model folders (A B [C ...])"
    )
    parser.add_argument("--split", default="random")
    parser.add_argument("--metric", default="rmse", help="metrics.json key (default rmse)")
    parser.add_argument(
        "--complete-repeats",
        action="store_true",
        help="only repeats whose every fold all models finished",
    )
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("--models needs at least two models to compare")

    root = Path(args.results) / args.dataset / args.target
    found = [fold_metrics(root, model, args.split) for model in args.models]
    keys = shared_folds(found, args.complete_repeats)
    if not keys:
        raise SystemExit(f"no fold finished by all of {args.models} under {root}")
    for key in keys:
        splits = {tuple(f[key].get(name) for name in SPLIT_FIELDS) for f in found}
        if len(splits) > 1:
            raise SystemExit(
                f"r{key[0]}-f{key[1]} is not the same test set for every model "
                f"({', '.join(SPLIT_FIELDS)}: {sorted(splits, key=str)}); compare runs of one split"
            )
    values = np.array([[f[key][args.metric] for key in keys] for f in found])

    print(f"{args.metric} per fold ({len(keys)} folds finished by every model)\n")
    rows = [("fold", *args.models)]
    rows += [
        (f"r{key[0]}-f{key[1]}", *(f"{v:.3f}" for v in values[:, i])) for i, key in enumerate(keys)
    ]
    print_table(rows)

    repeats = sorted({key[0] for key in keys})
    print("\nper model\n")
    rows = [("", *args.models)]
    rows.append(("mean (std over folds)", *(f"{v.mean():.3f} ({v.std():.3f})" for v in values)))
    rows.append(
        (
            "repeats' means",
            *(
                " / ".join(
                    f"{np.mean([f[key][args.metric] for key in keys if key[0] == r]):.3f}"
                    for r in repeats
                )
                for f in found
            ),
        )
    )
    rows.append(("mean valid RMSE", *(f"{_mean(f, keys, 'valid_rmse'):.3f}" for f in found)))
    for name, label in UNCERTAINTY_KEYS.items():
        means = [_mean(f, keys, name) for f in found]
        if not all(np.isnan(means)):
            rows.append((label, *("–" if np.isnan(m) else f"{m:.3f}" for m in means)))
    print_table(rows)

    print("\npaired differences (B − A; 95 % interval, corrected resampled t-test)\n")
    n_train = float(np.mean([found[0][key]["n_train"] for key in keys]))
    n_test = float(np.mean([found[0][key]["n_valid"] + found[0][key]["n_test"] for key in keys]))
    rows = [("B − A", "mean", "95 % interval", "t", "p", "B better")]
    for i, j in itertools.combinations(range(len(args.models)), 2):
        d = values[j] - values[i]
        better = d > 0 if args.metric in HIGHER_IS_BETTER else d < 0
        half, t, p = corrected_resampled_t(d, n_train, n_test)
        rows.append(
            (
                f"{args.models[j]} − {args.models[i]}",
                f"{d.mean():+.3f}",
                f"[{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]",
                f"{t:.2f}",
                f"{p:.3f}",
                f"{int(better.sum())} of {len(keys)}",
            )
        )
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
