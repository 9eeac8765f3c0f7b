"""Paired comparison of two models over the same cross-validation folds (prints a table).

Reads the ``metrics.json`` of every (repeat, fold) that both models finished under
``<results>/<dataset>/<target>/<model>/<split>/r<repeat>-f<fold>/`` and reports each model's mean
test RMSE (std over folds), the mean paired difference (B − A), its 95 % interval and p-value from
the corrected resampled t-test (Nadeau & Bengio 2003: the variance of the mean difference is
inflated by n_test/n_train because the training sets of the folds overlap), and how many folds B
won. With ``--covered`` the same for the test pairs with QM samples only.

example:
  .venv/bin/python bench/compare_folds.py --results results/samples_contrast/evaluate \\
      --dataset freesolv_cgib --target dg_hydration_kcal_mol --models probpair_2d probpair
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pairfactory.ml.statistics import corrected_resampled_t


def fold_metrics(root: Path, model: str, split: str) -> dict[tuple[int, int], dict]:
    found = {}
    for path in sorted((root / model / split).glob("r*-f*/metrics.json")):
        metrics = json.loads(path.read_text())
        found[(metrics["repeat"], metrics["fold"])] = metrics
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", default="results/evaluate")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--models", nargs=2, required=True, metavar=("A", "B"))
    parser.add_argument("--split", default="random")
    parser.add_argument("--metric", default="rmse", help="metrics.json key (default rmse)")
    args = parser.parse_args(argv)

    root = Path(args.results) / args.dataset / args.target
    a, b = (fold_metrics(root, m, args.split) for m in args.models)
    keys = sorted(set(a) & set(b))
    if not keys:
        raise SystemExit(f"no fold finished by both {args.models} under {root}")
    rows = [("", *args.models)]
    for key in keys:
        rows.append(
            (f"r{key[0]}-f{key[1]}", f"{a[key][args.metric]:.3f}", f"{b[key][args.metric]:.3f}")
        )
    va = np.array([a[k][args.metric] for k in keys])
    vb = np.array([b[k][args.metric] for k in keys])
    rows.append(
        ("mean (std)", f"{va.mean():.3f} ({va.std():.3f})", f"{vb.mean():.3f} ({vb.std():.3f})")
    )
    width = max(len(r[0]) for r in rows)
    for row in rows:
        print(f"{row[0]:<{width}}  {row[1]:>16}  {row[2]:>16}")
    d = vb - va
    n_train = float(np.mean([a[k]["n_train"] for k in keys]))
    n_test = float(np.mean([a[k]["n_valid"] + a[k]["n_test"] for k in keys]))
    half, t, p = corrected_resampled_t(d, n_train, n_test)
    print(
        f"\n{args.models[1]} − {args.models[0]}: {d.mean():+.3f} "
        f"[{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] (corrected resampled t = {t:.2f}, "
        f"p = {p:.3f}, {len(keys)} folds); {args.models[1]} better in {int((d < 0).sum())}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
