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

A model written ``FOLDER[i]`` is member i of an ensemble folder's folds (``--ensemble``: member 0
is the single model of the fold): its test RMSE is the fold's ``member_rmse[i]``, and nothing else
is recorded per member.

``--group-by domain``, ``extrapolation`` and ``solute_similarity`` ask whether the
``extrapolation`` flag of a prediction means what it says: each test pair is checked against its
own fold's training domain (the fold's training pairs, as a final model's domain holds the pairs
whose labels it was fitted to), with the checks ``pairfactory predict`` makes
(``pairfactory.ml.applicability``): ``domain`` is "inside" or "outside: <the checks it fails>",
``extrapolation`` "inside" or "flagged" (every "outside" together), ``solute_similarity`` bins the
Tanimoto similarity to the nearest training solute (as the ``solute_similarity`` column newer folds
save). They need ``--pairs`` for the SMILES, and every compared model trained on the same pairs
(not with extra pairs of another table).

For models whose predictions carry a σ (``y_std``), the grouped table is followed by σ per group:
its root mean square and the share of test errors within 1.96 σ (95 % coverage).

``--csv PATH`` also writes the per-fold table (repeat, fold, one column per model).

``--group-by COLUMN`` adds where the models differ: the test pairs split by a column of the
predictions (``covered``) or of the pair table (``--pairs``; e.g. ``solvent_smiles``: the ``--top``
most frequent values, the rest as "(other)"; a pair counts once per fold it was tested in). Per
group: its share of the first model's squared error, the test RMSE pooled over the folds, and
each model's paired difference from the first model in per-fold RMSE over the folds where the
group has test pairs (the same corrected t-test, with the whole test set's n_test / n_train:
conservative for a group).

examples:
  .venv/bin/python bench/compare_folds.py --results results/tuned_642/evaluate \\
      --dataset freesolv --target dg_hydration_kcal_mol --models probpair_2d probpair cigin
  .venv/bin/python bench/compare_folds.py --results results/mnsol_5x5/evaluate --dataset mnsol \\
      --target dg_solv_kcal_mol --models probpair_2d probpair cigin \\
      --pairs results/pairs/mnsol/dg_solv_kcal_mol.parquet --group-by solvent_smiles --top 5
  # does the extrapolation flag pick out the larger errors and σ? (solute split: every test
  # solute is new to its fold)
  .venv/bin/python bench/compare_folds.py --results results/mnsol_solute_5x5/compare \\
      --dataset mnsol --target dg_solv_kcal_mol --split solute \\
      --models twin probpair_bilinear cigin \\
      --pairs results/pairs/mnsol/dg_solv_kcal_mol.parquet --group-by extrapolation
  # an ensemble against its own member 0 (the single model of each fold)
  .venv/bin/python bench/compare_folds.py --results results/ensemble_alpb/evaluate \\
      --dataset freesolv_cgib --target dg_hydration_kcal_mol --models 'probpair_2d[0]' probpair_2d
"""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pairfactory.ml.applicability import (
    DEFAULT_MIN_SOLUTE_SIMILARITY,
    MoleculeFacts,
    TrainingDomain,
    smiles_facts,
)
from pairfactory.ml.statistics import corrected_resampled_t
from pairfactory.ml.tune import read_fold_metrics
from pairfactory.ml.uncertainty import calibration_kind

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
# the group of the values outside --top
OTHER = "(other)"
# what makes two models' folds of one (repeat, fold) the same test set
SPLIT_FIELDS = ("split", "n_folds", "split_seed")


# --group-by columns computed per fold from its own training pairs, not read from a table
DOMAIN = "domain"
EXTRAPOLATION = "extrapolation"
SOLUTE_SIMILARITY = "solute_similarity"
DOMAIN_COLUMNS = (DOMAIN, EXTRAPOLATION, SOLUTE_SIMILARITY)
# edges of the solute_similarity groups, from the flag's threshold up
SIMILARITY_EDGES = (DEFAULT_MIN_SOLUTE_SIMILARITY, 0.5, 0.7)

# FOLDER[i]: member i of an ensemble's folds
MEMBER = re.compile(r"^(?P<folder>.+)\[(?P<member>\d+)\]$")
# what a fold's metrics.json records per member, the split's fields and sizes aside
MEMBER_KEYS = ("rmse",)


def fold_metrics(root: Path, model: str, split: str) -> dict[tuple[int, int], dict]:
    match = MEMBER.match(model)
    folder = match["folder"] if match else model
    found = {}
    for path in sorted((root / folder / split).glob("r*-f*/metrics.json")):
        metrics = read_fold_metrics(path)
        if match:
            metrics = _member(metrics, int(match["member"]), path)
        found[(metrics["repeat"], metrics["fold"])] = metrics
    return found


def _member(metrics: dict, member: int, path: Path) -> dict:
    """The fold's metrics with member ``member``'s test RMSE as ``rmse`` and without the
    validation RMSE and σ metrics, which are the ensemble's; the other keys (mae, r2, …) stay the
    ensemble's, so ``main`` allows only MEMBER_KEYS as the metric of a member."""
    rmses = metrics.get("member_rmse") or []
    if member >= len(rmses):
        raise SystemExit(
            f"{path} records {len(rmses)} ensemble members, so it has no member {member}"
            + ("" if rmses else " (not an ensemble fold: give the folder without [i])")
        )
    kept = {k: v for k, v in metrics.items() if k not in (*UNCERTAINTY_KEYS, "valid_rmse")}
    return {**kept, "rmse": rmses[member]}


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


def _similarity_group(similarity: float) -> str:
    below = [edge for edge in SIMILARITY_EDGES if similarity < edge]
    if not below:
        return f"≥ {SIMILARITY_EDGES[-1]}"
    upper = below[0]
    lower = max((edge for edge in SIMILARITY_EDGES if edge < upper), default=None)
    return f"< {upper}" if lower is None else f"{lower}–{upper}"


def domain_groups(
    root: Path, models: list[str], split: str, keys: list[tuple[int, int]], pairs: pd.DataFrame
) -> pd.DataFrame:
    """Per fold and test pair (``key``, ``pair_id``): ``domain`` and ``solute_similarity`` against
    the domain of the fold's training pairs. Refuses models whose folds trained on other pairs:
    one domain per fold must serve them all."""

    missing_columns = {"pair_id", "solute_smiles", "solvent_smiles"} - set(pairs.columns)
    if missing_columns:
        raise SystemExit(
            f"--group-by {'/'.join(DOMAIN_COLUMNS)} needs the SMILES: --pairs lacks "
            f"{', '.join(sorted(missing_columns))}"
        )
    smiles = pairs.drop_duplicates("pair_id").set_index("pair_id")[
        ["solute_smiles", "solvent_smiles"]
    ]
    facts: dict[str, MoleculeFacts] = {}

    def facts_of(text: str) -> MoleculeFacts:
        if text not in facts:
            try:
                facts[text] = smiles_facts(text)
            except ValueError as err:
                raise SystemExit(f"--pairs: {err}") from err
        return facts[text]

    rows = []
    for repeat, fold in keys:
        key = f"r{repeat}-f{fold}"
        frames = {
            model: pd.read_parquet(root / model / split / key / "predictions.parquet")
            for model in models
        }
        trained = {
            model: set(f.loc[f["role"] == "train", "pair_id"]) for model, f in frames.items()
        }
        for model in models[1:]:
            if trained[model] != trained[models[0]]:
                raise SystemExit(
                    f"--group-by {'/'.join(DOMAIN_COLUMNS)}: {model} and {models[0]} trained "
                    f"on other pairs in {key} (extra training pairs?); compare them apart"
                )
        frame = frames[models[0]]
        unknown = ~frame["pair_id"].isin(smiles.index)
        if unknown.any():
            raise SystemExit(
                f"{int(unknown.sum())} pairs of {key} have no row in --pairs: is it the table "
                "these folds were trained on (without extra pairs)?"
            )
        learned = smiles.loc[frame.loc[frame["role"] == "train", "pair_id"]]
        domain = TrainingDomain.from_facts(
            [facts_of(s) for s in sorted(set(learned["solute_smiles"]))],
            [facts_of(s) for s in sorted(set(learned["solvent_smiles"]))],
        )
        for pair_id in frame.loc[frame["role"] == "test", "pair_id"]:
            solute = facts_of(smiles.at[pair_id, "solute_smiles"])
            solvent = facts_of(smiles.at[pair_id, "solvent_smiles"])
            similarity = domain.nearest_solute_similarity(solute)
            failed = [check for check, _ in domain.check(solute, solvent, similarity)]
            rows.append(
                {
                    "key": key,
                    "pair_id": pair_id,
                    DOMAIN: "outside: " + ", ".join(failed) if failed else "inside",
                    EXTRAPOLATION: "flagged" if failed else "inside",
                    SOLUTE_SIMILARITY: _similarity_group(similarity),
                }
            )
    return pd.DataFrame(rows)


def group_errors(
    root: Path,
    models: list[str],
    split: str,
    keys: list[tuple[int, int]],
    column: str,
    pairs: pd.DataFrame | None,
    top: int,
) -> pd.DataFrame:
    """One row per (model, fold, test pair): its squared error and its group."""
    frames = []
    for model in models:
        for repeat, fold in keys:
            path = root / model / split / f"r{repeat}-f{fold}" / "predictions.parquet"
            if not path.is_file():
                raise SystemExit(f"{path} is missing: --group-by reads each fold's predictions")
            frame = pd.read_parquet(path)
            frame = frame[frame["role"] == "test"]
            prediction_columns = list(frame.columns)
            frames.append(frame.assign(model=model, key=f"r{repeat}-f{fold}"))
    errors = pd.concat(frames, ignore_index=True)
    if column in DOMAIN_COLUMNS:
        if pairs is None:
            raise SystemExit(f"--group-by {column}: give --pairs, the pair table, for the SMILES")
        groups = domain_groups(root, models, split, keys, pairs)
        # newer folds save the similarity itself; the groups are its bins
        merged = errors.drop(columns=column, errors="ignore").merge(
            groups[["key", "pair_id", column]], on=["key", "pair_id"]
        )
        if len(merged) != len(errors):
            raise SystemExit(
                f"the models' test pairs differ from {models[0]}'s in some fold: not the same folds"
            )
        errors = merged
    elif column not in prediction_columns:
        if pairs is None:
            raise SystemExit(
                f"--group-by {column}: not a column of the predictions "
                f"({', '.join(prediction_columns)}); give --pairs, the pair table, for its columns"
            )
        if column not in pairs.columns:
            raise SystemExit(
                f"--group-by {column}: neither the predictions nor --pairs have it (the pair "
                f"table's columns: {', '.join(map(str, pairs.columns))})"
            )
        lookup = pairs.drop_duplicates("pair_id").set_index("pair_id")[column]
        missing = ~errors["pair_id"].isin(lookup.index)
        if missing.any():
            raise SystemExit(
                f"{int(missing.sum())} test predictions have no row in --pairs: is it the table "
                "these folds were trained on?"
            )
        errors[column] = errors["pair_id"].map(lookup)
    values = errors[column].astype(object).where(errors[column].notna(), "(missing)").astype(str)
    counts = values[errors["model"] == models[0]].value_counts()
    kept = set(counts.index[:top]) if len(counts) > top + 1 else set(counts.index)
    errors["group"] = values.where(values.isin(kept), OTHER)
    errors["squared_error"] = (errors["y_pred"] - errors["y_true"]) ** 2
    return errors


def similarity_groups() -> list[str]:
    """The solute_similarity groups from the least to the most similar."""
    return [_similarity_group(x) for x in (0.0, *SIMILARITY_EDGES)]


def print_groups(
    errors: pd.DataFrame,
    models: list[str],
    n_train: float,
    n_test: float,
    order: list[str] | None = None,
) -> None:
    """The grouped tables; groups in ``order`` where given, else the largest first."""
    groups = errors[errors["model"] == models[0]]["group"].value_counts()
    groups = pd.concat([groups.drop(OTHER, errors="ignore"), groups.filter([OTHER])])
    if order is not None:
        groups = groups.reindex([g for g in [*order, OTHER] if g in groups.index])
    first = errors[errors["model"] == models[0]]
    share = first.groupby("group")["squared_error"].sum() / first["squared_error"].sum()
    rows = [
        (
            "group",
            "test predictions",
            f"share of {models[0]}'s squared error",
            *(f"{m} pooled" for m in models),
        )
    ]
    pooled = errors.groupby(["group", "model"])["squared_error"].mean().pow(0.5).unstack()
    for group, n in groups.items():
        rows.append(
            (
                str(group),
                str(n),
                f"{share[group]:.3f}",
                *(f"{pooled.loc[group, m]:.3f}" for m in models),
            )
        )
    print_table(rows)
    with_sigma = [m for m in models if _has_sigma(errors, m)]
    if with_sigma:
        print("\nσ per group: root mean square σ / share of errors within 1.96 σ (pooled)\n")
        rows = [("group", *with_sigma)]
        for group in groups.index:
            cells = []
            for model in with_sigma:
                part = errors[(errors["group"] == group) & (errors["model"] == model)]
                if part.empty:
                    cells.append("–")
                    continue
                rms_sigma = float(np.sqrt(np.mean(part["y_std"] ** 2)))
                within = float(np.mean(part["squared_error"] <= (1.96 * part["y_std"]) ** 2))
                cells.append(f"{rms_sigma:.3f} / {within:.2f}")
            rows.append((str(group), *cells))
        print_table(rows)
    print(f"\nper group, paired over folds: model − {models[0]} (per-fold RMSE)\n")
    rows = [("group", "model", "folds", "mean diff", "95 % interval", "p")]
    per_fold = errors.groupby(["group", "model", "key"])["squared_error"].mean().pow(0.5)
    for group in groups.index:
        base = per_fold.loc[(group, models[0])]
        for model in models[1:]:
            other = per_fold.loc[(group, model)].reindex(base.index)
            d = (other - base).dropna().to_numpy()
            if len(d) < 2:
                rows.append((str(group), model, str(len(d)), "–", "–", "–"))
                continue
            half, _, p = corrected_resampled_t(d, n_train, n_test)
            rows.append(
                (
                    str(group),
                    model,
                    str(len(d)),
                    f"{d.mean():+.3f}",
                    f"[{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]",
                    f"{p:.3f}",
                )
            )
    print_table(rows)


def _has_sigma(errors: pd.DataFrame, model: str) -> bool:
    return "y_std" in errors.columns and bool(
        errors.loc[errors["model"] == model, "y_std"].notna().all()
    )


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
    parser.add_argument(
        "--csv",
        help="also write the per-fold table (repeat, fold, one column per model) to this CSV, "
        "so that later contrasts need only the file",
    )
    parser.add_argument(
        "--group-by",
        help=f"a column of the predictions or of --pairs, or {', '.join(DOMAIN_COLUMNS)} "
        "(each test pair against its fold's training domain; needs --pairs)",
    )
    parser.add_argument("--pairs", help="the pair table the folds were trained on (Parquet)")
    parser.add_argument(
        "--top",
        type=int,
        help="with --group-by: the N largest groups (default 5), the rest '(other)'",
    )
    args = parser.parse_args(argv)
    if args.top is not None and args.top < 1:
        parser.error("--top must be >= 1")
    if not args.group_by and (args.pairs or args.top is not None):
        parser.error("--pairs and --top go with --group-by")
    if len(args.models) < 2:
        parser.error("--models needs at least two models to compare")

    members = [m for m in args.models if MEMBER.match(m)]
    if members and args.metric not in MEMBER_KEYS:
        parser.error(f"an ensemble member ({members[0]}) has only {', '.join(MEMBER_KEYS)}")
    if members and args.group_by:
        parser.error(f"--group-by reads each fold's predictions, which {members[0]} has not")
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

    if args.csv:
        table = pd.DataFrame(values.T, columns=args.models)
        table.insert(0, "fold", [key[1] for key in keys])
        table.insert(0, "repeat", [key[0] for key in keys])
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False, float_format="%.6f")
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
    valid = [_mean(f, keys, "valid_rmse") for f in found]
    rows.append(("mean valid RMSE", *("–" if np.isnan(v) else f"{v:.3f}" for v in valid)))
    for name, label in UNCERTAINTY_KEYS.items():
        means = [_mean(f, keys, name) for f in found]
        if not all(np.isnan(means)):
            rows.append((label, *("–" if np.isnan(m) else f"{m:.3f}" for m in means)))
    print_table(rows)
    calibrations = {calibration_kind(f[key]) for f in found for key in keys} - {None}
    if len(calibrations) > 1:
        print(
            "\nnote: the σ metrics mix calibrations: folds calibrated with and without the "
            "novelty term (folds saved before σ grew with novelty have no novelty_sigma); "
            "compare σ metrics within one kind"
        )

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

    if args.group_by:
        pairs = pd.read_parquet(args.pairs) if args.pairs else None
        errors = group_errors(
            root, args.models, args.split, keys, args.group_by, pairs, args.top or 5
        )
        print(f"\ntest RMSE by {args.group_by} (pooled over the {len(keys)} folds)\n")
        order = similarity_groups() if args.group_by == SOLUTE_SIMILARITY else None
        print_groups(errors, args.models, n_train, n_test, order)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
