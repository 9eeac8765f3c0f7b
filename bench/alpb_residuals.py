"""Does ΔG_solv(ALPB) explain what a model's test predictions get wrong? (prints a table)

For every finished fold of one model under ``<results>/<model>/<split>/r<repeat>-f<fold>/``, its
test pairs that have an ALPB value in the descriptor table: the correlation of the residual
(y − ŷ) with ALPB − ŷ, and the RMSE before and after a linear correction r ≈ a + b (ALPB − ŷ)
fitted out of fold (on the other folds' test pairs of the same repeat, so no pair corrects
itself; a fold whose repeat offers fewer than 3 such pairs is left out, and the table says how
many pairs were corrected). A correction that helps means the input carries information the
model did not use; one that does not means the model already has it, or it is not there.

With ``--terms``, a second correction reads ŷ and ΔG_solv's four terms (electrostatic, surface
area, hydrogen bonds, shift; columns of the descriptor table) in place of the total: r ≈ a + c ŷ +
Σ d_k term_k (the total's correction is the case d_k = b, c = −b), fitted the same way on the pairs
that have every term, whose count its cell gives. It asks whether the terms carry what the total
does not, e.g. for a model given the total as an input.

With ``--solvent SMILES`` the rows are that solvent's pairs, also split by whether their solute
occurs with another solvent in the pair table (the model can then learn the solute from its other
solvents).

example:
  .venv/bin/python bench/alpb_residuals.py \\
      --results results/mnsol_5x5/evaluate/mnsol/dg_solv_kcal_mol --model probpair_2d \\
      --pairs results/pairs/mnsol/dg_solv_kcal_mol.parquet \\
      --descriptors results/descriptors/mnsol/xtb-5bc9618c/alpb.parquet --solvent O
  # the terms too, for the twin given ALPB as an input
  .venv/bin/python bench/alpb_residuals.py --terms \\
      --results results/ensemble_alpb/evaluate/freesolv_cgib/dg_hydration_kcal_mol \\
      --model probpair_2d --pairs results/pairs/freesolv_cgib/dg_hydration_kcal_mol.parquet \\
      --descriptors results/descriptors/freesolv/xtb-5bc9618c/alpb.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from compare_folds import print_table
from pairfactory.ml.sample_sets import descriptor_inputs, read_descriptors
from pairfactory.qm.descriptors import ALPB_TERM_COLUMNS


def test_residuals(results: Path, model: str, split: str, pairs: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for path in sorted((results / model / split).glob("r*-f*/predictions.parquet")):
        predictions = pd.read_parquet(path)
        fold = path.parent.name
        frames.append(
            predictions[predictions["role"] == "test"].assign(fold=fold, repeat=fold.split("-")[0])
        )
    if not frames:
        raise SystemExit(f"no predictions.parquet under {results / model / split}")
    tests = pd.concat(frames, ignore_index=True)
    unknown = ~tests["pair_id"].isin(pairs["pair_id"])
    if unknown.any():
        raise SystemExit(f"{int(unknown.sum())} test pairs are not in --pairs: another table?")
    return tests.merge(pairs, on="pair_id", how="left")


def out_of_fold(tests: pd.DataFrame, residual: pd.Series, features: np.ndarray) -> pd.Series:
    """The residuals less their least-squares fit on ``features`` (and a constant), each fold's
    fitted on the other folds' test pairs of its repeat; NaN for a fold with too few of those."""
    design = np.column_stack([np.ones(len(tests)), features])
    corrected = pd.Series(np.nan, index=tests.index)
    for fold, test in tests.groupby("fold"):
        train = (tests["repeat"] == test["repeat"].iloc[0]) & (tests["fold"] != fold)
        if train.sum() < design.shape[1] + 1:  # a line needs 3 pairs
            continue
        coef, *_ = np.linalg.lstsq(design[train.to_numpy()], residual[train], rcond=None)
        at = tests.index.get_indexer(test.index)
        corrected[test.index] = residual[test.index] - design[at] @ coef
    return corrected


def correction_row(label: str, tests: pd.DataFrame, terms: bool) -> tuple[str, ...]:
    tests = tests.dropna(subset=["alpb"])
    residual = tests["y_true"] - tests["y_pred"]
    gap = tests["alpb"] - tests["y_pred"]
    corrected = out_of_fold(tests, residual, gap.to_numpy()[:, None])
    kept = corrected.notna()
    row = (
        label,
        str(len(tests)),
        str(tests["fold"].nunique()),
        f"{np.corrcoef(residual, gap)[0, 1]:.3f}" if len(tests) > 2 else "–",
        str(int(kept.sum())),
        f"{np.sqrt(np.mean(residual[kept] ** 2)):.3f}" if kept.any() else "–",
        f"{np.sqrt(np.mean(corrected[kept] ** 2)):.3f}" if kept.any() else "–",
    )
    if not terms:
        return row
    complete = tests.dropna(subset=list(ALPB_TERM_COLUMNS))
    if complete.empty:
        return (*row, "–")
    features = np.column_stack([complete["y_pred"], complete[list(ALPB_TERM_COLUMNS)]])
    # the shift is one constant per solvent: within one solvent, a second intercept the fit
    # cannot place
    features = features[:, np.ptp(features, axis=0) > 0]
    with_terms = out_of_fold(complete, residual[complete.index], features).dropna()
    if with_terms.empty:
        return (*row, "–")
    return (*row, f"{np.sqrt(np.mean(with_terms**2)):.3f} ({len(with_terms)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", required=True, help="<evaluate dir>/<dataset>/<target>")
    parser.add_argument("--model", required=True)
    parser.add_argument("--split", default="random")
    parser.add_argument("--pairs", required=True, help="the pair table the folds were trained on")
    parser.add_argument("--descriptors", required=True, help="its `pairfactory solvation` table")
    parser.add_argument("--solvent", help="only this solvent's pairs (a SMILES of the table)")
    parser.add_argument(
        "--terms",
        action="store_true",
        help="also correct with ŷ and ΔG_solv's four terms in place of the total (a last column)",
    )
    args = parser.parse_args(argv)

    pairs = pd.read_parquet(args.pairs)
    terms = list(ALPB_TERM_COLUMNS) if args.terms else []
    values = descriptor_inputs(
        pairs, read_descriptors(args.descriptors), ["dg_solv_alpb_kcal_mol", *terms]
    )
    pairs = pairs.assign(
        alpb=values[:, 0],
        **{column: values[:, 1 + i] for i, column in enumerate(terms)},
        other_solvents=pairs.groupby("solute_smiles")["solvent_smiles"].transform("nunique") > 1,
    )[["pair_id", "solvent_smiles", "alpb", *terms, "other_solvents"]]
    tests = test_residuals(Path(args.results), args.model, args.split, pairs)
    if tests["alpb"].isna().all():
        raise SystemExit("none of the test pairs has an ALPB value: another descriptor table?")
    rows = [
        (
            "test pairs",
            "with ALPB value",
            "folds",
            "corr(r, ALPB − ŷ)",
            "corrected pairs",
            "their RMSE",
            "corrected",
            *(["corrected by ŷ and the terms (pairs)"] if args.terms else []),
        )
    ]
    if args.solvent is None:
        rows.append(correction_row("all", tests, args.terms))
    else:
        tests = tests[tests["solvent_smiles"] == args.solvent]
        if tests.empty:
            raise SystemExit(
                f"no test pair has solvent {args.solvent!r} (spell it as the pair table does)"
            )
        if tests["alpb"].isna().all():
            raise SystemExit(f"no test pair in {args.solvent!r} has an ALPB value")
        rows.append(correction_row(f"solvent {args.solvent}", tests, args.terms))
        if tests["other_solvents"].nunique() == 2:  # else the one row above says it all
            for flag, label in (
                (True, "solute also in other solvents"),
                (False, "solute only here"),
            ):
                rows.append(
                    correction_row(label, tests[tests["other_solvents"] == flag], args.terms)
                )
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
