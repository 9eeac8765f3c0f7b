"""What each of ProbPair's sample terms learned: the unweighted training loss terms (from the
``loss_*`` columns of every fold's history.csv) at the first epoch, the best-validation epoch and
the last epoch, beside what a model that learned nothing would score.

- contrastive (InfoNCE of each optimized complex among itself and its pair's decoys): chance is
  ln(1 + decoys of the pair) = ln(1 + decoys_per_sample x samples of the pair), printed for the
  table's median samples per covered pair;
- contact (binary cross-entropy against the contact fractions): with ``--pairs`` and
  ``--shards-dir``, on the first fold's test pairs, the BCE of the training pairs' mean fraction,
  of a logistic regression on the two atoms' 2D features (fitted on the training pairs: is where
  the solvent sits predictable from the atoms at all?) and the floor no model can pass (the
  fractions' own entropy);
- aux (MSE of the standardized auxiliary targets): predicting their training mean scores 1.

Prints a Markdown table (means over folds, and the range).

example (the FreeSolv-560 grid, our model at the chosen setting):
  root=results/tune_560/folds/freesolv_cgib/dg_hydration_kcal_mol
  .venv/bin/python bench/loss_terms.py "$root/probpair@batch_size=32,lr=0.001" \\
      --pairs results/pairs/freesolv_cgib/dg_hydration_kcal_mol.parquet \\
      --shards-dir ../shared/qm/shards/freesolv/xtb-5bc9618c
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TERMS = {"contact": "contact_weight", "contrastive": "contrastive_weight", "aux": "aux_weight"}


def fold_terms(fold_dir: Path) -> dict[str, dict[str, float]] | None:
    """{term: {first, best, last}} unweighted, or None for a fold without loss columns."""
    metrics = json.loads((fold_dir / "metrics.json").read_text())
    history = pd.read_csv(fold_dir / "history.csv")
    if not any(c.startswith("loss_") for c in history.columns):
        return None
    rows = {"first": history.iloc[0], "best": history.iloc[metrics["best_epoch"] - 1]}
    rows["last"] = history.iloc[-1]
    out = {}
    for term, weight_name in TERMS.items():
        weight = float(metrics["hparams"].get(weight_name, 0.0))
        if weight > 0 and f"loss_{term}" in history:
            out[term] = {at: float(row[f"loss_{term}"]) / weight for at, row in rows.items()}
    return out


def contact_reference(pairs: str, shards_dir: str) -> dict[str, float]:
    """How predictable the contact fractions are, on fold 0 (default sample-set settings): the
    test pairs' BCE of the training pairs' mean fraction (``constant``), of a logistic regression
    on the two atoms' 2D features fitted on the training pairs (``atoms``), and the floor no model
    can pass (the fractions' own entropy, ``floor``)."""
    from sklearn.linear_model import LogisticRegression

    from pairfactory.ml.graph_cache import GraphCache
    from pairfactory.ml.sample_sets import SampleSetSettings, fold_samples
    from pairfactory.ml.splits import make_splits

    table = pd.read_parquet(pairs)
    split = make_splits("random", table["solute_smiles"].tolist(), n_folds=5, seed=0)[0]
    cache = GraphCache(None)
    # maps of every row, for this analysis only: the fit sees the training rows alone
    every = np.arange(len(table))
    maps = fold_samples(table, every, shards_dir, cache, SampleSetSettings()).supervision

    def entries(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, fractions = [], []
        for row in table.iloc[rows].itertuples(index=False):
            found = maps.get(row.pair_id)
            if found is None or found.contact_map is None:
                continue
            hu = cache.get(row.solute_smiles).ndata["h"].numpy()
            hv = cache.get(row.solvent_smiles).ndata["h"].numpy()
            n_u, n_v = found.contact_map.shape
            features.append(np.concatenate([np.repeat(hu, n_v, 0), np.tile(hv, (n_u, 1))], 1))
            fractions.append(found.contact_map.ravel())
        return np.concatenate(features), np.clip(np.concatenate(fractions), 0.0, 1.0)

    x_train, y_train = entries(split.train)
    x_test, y_test = entries(split.test)
    # fractional labels: each entry once as a contact (weight y) and once as none (weight 1 - y)
    model = LogisticRegression(max_iter=2000).fit(
        np.concatenate([x_train, x_train]),
        np.r_[np.ones(len(y_train)), np.zeros(len(y_train))],
        sample_weight=np.r_[y_train, 1.0 - y_train],
    )

    def bce(p: np.ndarray) -> float:
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(-(y_test * np.log(p) + (1 - y_test) * np.log(1 - p)).mean())

    inner = y_test[(y_test > 0) & (y_test < 1)]
    floor = -(inner * np.log(inner) + (1 - inner) * np.log(1 - inner)).sum() / len(y_test)
    return {
        "constant": bce(np.full(len(y_test), y_train.mean())),
        "atoms": bce(model.predict_proba(x_test)[:, 1]),
        "floor": float(floor),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dirs", nargs="+", help="<results>/<dataset>/<target>/<model label>")
    parser.add_argument("--split", default="random")
    parser.add_argument("--pairs", help="pair table, for the contact reference")
    parser.add_argument("--shards-dir", help="its QM samples, for the contact reference")
    args = parser.parse_args(argv)

    reference = {}
    if args.pairs and args.shards_dir:
        ref = contact_reference(args.pairs, args.shards_dir)
        reference["contact"] = (
            f"fold 0 test: constant {ref['constant']:.3f}, logistic on atom features "
            f"{ref['atoms']:.3f}, floor {ref['floor']:.3f}"
        )
    reference["aux"] = "mean predictor 1"
    print("| model | term | folds | epoch 1 | best epoch | last epoch | learned nothing |")
    print("|---|---|---|---|---|---|---|")
    for model_dir in map(Path, args.model_dirs):
        per_fold = [
            terms
            for d in sorted((model_dir / args.split).glob("r*-f*"))
            if (d / "history.csv").is_file() and (terms := fold_terms(d)) is not None
        ]
        if not per_fold:
            print(f"| {model_dir.name} | (no fold with loss columns) | 0 | | | | |")
            continue
        first = json.loads(next((model_dir / args.split).glob("r*-f*/metrics.json")).read_text())
        samples = first.get("samples", {})
        kept, covered = samples.get("kept", 0), samples.get("covered_pairs", 0)
        decoys = samples.get("settings", {}).get("decoys_per_sample", 0)
        per_pair = round(kept / covered) if covered else 0
        reference["contrastive"] = (
            f"ln(1 + {decoys} x {per_pair}) = {math.log(1 + decoys * per_pair):.3f}"
        )
        for term in TERMS:
            values = [f[term] for f in per_fold if term in f]
            if not values:
                continue
            cells = []
            for at in ("first", "best", "last"):
                column = [v[at] for v in values]
                cells.append(f"{np.mean(column):.3f} ({min(column):.3f}–{max(column):.3f})")
            print(
                f"| {model_dir.name} | {term} | {len(values)} | "
                + " | ".join(cells)
                + f" | {reference.get(term, '')} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
