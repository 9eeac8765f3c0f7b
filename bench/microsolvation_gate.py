"""Does a shell of several solvent molecules carry what one solvent molecule does not? (prints
tables; issue 10, a follow-up of the information gate, docs/info_gate.md)

The gate found that the samples' features (one solvent molecule per complex) add almost nothing to
a tuned 2D model. One molecule may simply be too little solvent. This script compares the same
features from two shard folders of the same systems, made alike except for ``samples.n_solvent``
(folder A: one solvent molecule, folder B: several), on the systems both hold:

* per system, robust summaries over its ok samples of
  - ``e_int``: the interaction energy the shards store, E(complex) − E(solute) − n·E(solvent)
    with relaxed references; for n > 1 it includes the solvent molecules' binding to each other;
  - ``e_vert``: the solute–shell interaction at the complex's own geometry,
    E(complex) − E(solute at that geometry) − E(solvent molecules together at that geometry):
    two GFN2-xTB single points per sample (tblite, the shards' engine settings), cached in
    ``--cache``; free of the solvent–solvent binding and of every deformation term;
  - solute–solvent contacts below 3 Å and H-bond contacts (``pairfactory.ml.sample_features``);
* for each: Pearson r with experiment, and the partial r with experiment given a 2D model's
  out-of-fold prediction (Fisher-z 95 % interval), and given that prediction and ALPB ΔG_solv.

The 2D model's out-of-fold prediction of a pair is the mean, over the repeats of a
``bench/reproduce.py`` results folder, of its held-out (valid + test) prediction in the fold that
held it out; each repeat must hold out every pair once. Folder A's features are given twice:
from its first ``len(B's samples)`` samples (the same number of complexes as B) and from all of
its samples (with 8 one-molecule samples against 2 four-molecule ones, the same number of solvent
molecules placed).

example:
  .venv/bin/python bench/microsolvation_gate.py \\
      --pairs results/pairs/freesolv_cgib/dg_hydration_kcal_mol.parquet \\
      --shards-a ../shared/qm/shards/freesolv/xtb-5bc9618c \\
      --shards-b results/microsolvation/shards/freesolv/xtb-5bc9618c \\
      --oof twin=results/fs560_5x5/compare/freesolv_cgib/dg_hydration_kcal_mol/twin \\
      --descriptors results/descriptors/freesolv/xtb-5bc9618c/alpb.parquet \\
      --cache results/microsolvation/vertical_cache.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from info_gate import _fisher_ci
from pairfactory.ml.sample_features import QCSettings, flag_outliers, sample_contacts
from pairfactory.qm.engines.xtb import XtbEngine, XtbSettings
from pairfactory.qm.plan import system_id_for
from pairfactory.qm.shards import STATUS_OK, read_shard, shard_paths

HARTREE_TO_KCAL_MOL = 627.509474
COLUMNS = [
    "system_id",
    "k",
    "status",
    "atomic_numbers",
    "fragment_index",
    "final_positions_angstrom",
    "energy_hartree",
    "interaction_energy_kcal_mol",
]
ALPB_COLUMN = "dg_solv_alpb_kcal_mol"
# Summaries per system; ``min`` is the best contact found, ``median`` the typical one.
FEATURES = [
    ("e_int", "min"),
    ("e_int", "median"),
    ("e_vert", "min"),
    ("e_vert", "median"),
    ("contacts_lt_3p0", "median"),
    ("hbond_contacts", "median"),
    ("hbond_contacts", "max"),
]


def read_samples(folder: Path, systems: set[str]) -> pd.DataFrame:
    """One row per sample of ``systems`` in a shard folder (all statuses)."""
    paths = shard_paths(folder)
    if not paths:
        raise SystemExit(f"no shard files in {folder}")
    frames = [read_shard(p, columns=COLUMNS).to_pandas() for p in paths]
    samples = pd.concat(frames, ignore_index=True)
    return samples[samples["system_id"].isin(systems)].reset_index(drop=True)


def vertical_energies(samples: pd.DataFrame, cache_path: Path | None) -> pd.Series:
    """E_vert (kcal/mol) of every ok sample: E(complex) − E(fragment 0) − E(fragments ≥ 1), the
    two fragment energies single points at the complex's final geometry. NaN for other samples."""
    cache = pd.DataFrame(columns=["system_id", "k", "n_atoms", "e_vert_kcal_mol"])
    if cache_path is not None and cache_path.is_file():
        cache = pd.read_parquet(cache_path)
    known = {
        (s, int(k), int(n)): e
        for s, k, n, e in cache[["system_id", "k", "n_atoms", "e_vert_kcal_mol"]].itertuples(
            index=False
        )
    }
    engine = XtbEngine(XtbSettings(), threads=1)
    out = np.full(len(samples), np.nan)
    new_rows = []
    ok = (samples["status"] == STATUS_OK) & samples["energy_hartree"].notna()
    for i in tqdm(np.flatnonzero(ok.to_numpy()), desc="single points", unit="sample"):
        row = samples.iloc[i]
        z = np.asarray(row["atomic_numbers"], dtype=int)
        key = (row["system_id"], int(row["k"]), len(z))
        if key not in known:
            frag = np.asarray(row["fragment_index"], dtype=int)
            xyz = np.asarray(row["final_positions_angstrom"], dtype=float).reshape(-1, 3)
            solute, shell = frag == 0, frag > 0
            # neutral closed-shell fragments: the curated sets' molecules (a charged or radical
            # fragment would need its charge and multiplicity from the plan)
            e_solute = engine.energy(z[solute], xyz[solute])
            e_shell = engine.energy(z[shell], xyz[shell])
            known[key] = (float(row["energy_hartree"]) - e_solute - e_shell) * HARTREE_TO_KCAL_MOL
            new_rows.append({"system_id": key[0], "k": key[1], "n_atoms": key[2]})
            new_rows[-1]["e_vert_kcal_mol"] = known[key]
        out[i] = known[key]
    if cache_path is not None and new_rows:
        new = pd.DataFrame(new_rows)
        merged = new if cache.empty else pd.concat([cache, new], ignore_index=True)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        merged.to_parquet(cache_path, index=False)
    return pd.Series(out, index=samples.index)


def system_features(samples: pd.DataFrame, cache_path: Path | None) -> pd.DataFrame:
    """Per system: counts and the FEATURES summaries over its QC-kept ok samples."""
    samples = samples.copy()
    samples["e_vert"] = vertical_energies(samples, cache_path)
    samples["e_int"] = samples["interaction_energy_kcal_mol"].astype(float)
    contacts = [
        sample_contacts(z, f, x) if s == STATUS_OK else None
        for z, f, x, s in samples[
            ["atomic_numbers", "fragment_index", "final_positions_angstrom", "status"]
        ].itertuples(index=False)
    ]
    samples["contacts_lt_3p0"] = [
        np.nan if c is None else c.contacts_lt_3p0_angstrom for c in contacts
    ]
    samples["hbond_contacts"] = [np.nan if c is None else c.hbond_contacts for c in contacts]
    # The gate's QC (one-sided outliers per system); its absolute bounds are per solvent molecule.
    n_solvent = samples["fragment_index"].map(lambda f: int(max(f)))
    qc = QCSettings(
        max_interaction_kcal_mol=QCSettings().max_interaction_kcal_mol * int(n_solvent.max()),
        min_interaction_kcal_mol=QCSettings().min_interaction_kcal_mol * int(n_solvent.max()),
    )
    samples = flag_outliers(samples, qc)
    used = samples[samples["used"]]
    grouped = used.groupby("system_id")
    table = pd.DataFrame(
        {
            "n_samples": samples.groupby("system_id").size(),
            "n_ok": samples.groupby("system_id")["ok"].sum(),
            "n_qc_flagged": samples.groupby("system_id")["qc_flagged"].sum(),
        }
    )
    for column, how in FEATURES:
        table[f"{column}_{how}"] = getattr(grouped[column], how)()
    return table


def oof_predictions(model_dir: Path, pair_ids: pd.Index) -> pd.Series:
    """Mean over repeats of each pair's held-out prediction (see the module docstring)."""
    per_repeat: dict[int, list[pd.DataFrame]] = {}
    for path in sorted(model_dir.glob("random/r*-f*/predictions.parquet")):
        repeat = int(path.parent.name.split("-")[0][1:])
        p = pd.read_parquet(path, columns=["pair_id", "role", "y_pred"])
        per_repeat.setdefault(repeat, []).append(p[p["role"] != "train"])
    if not per_repeat:
        raise SystemExit(f"no random/r*-f*/predictions.parquet under {model_dir}")
    columns = []
    for repeat, parts in sorted(per_repeat.items()):
        held = pd.concat(parts, ignore_index=True)
        if held["pair_id"].duplicated().any() or set(held["pair_id"]) != set(pair_ids):
            raise SystemExit(
                f"{model_dir} repeat {repeat}: its folds do not hold out every pair of the table "
                "exactly once (an unfinished repeat, or another table)"
            )
        columns.append(held.set_index("pair_id")["y_pred"].reindex(pair_ids))
    return pd.concat(columns, axis=1).mean(axis=1).rename(f"{len(columns)} repeats")


def partial_r(x: np.ndarray, y: np.ndarray, given: list[np.ndarray]) -> tuple[float, str, int]:
    """Correlation of x and y after regressing both on ``given`` (and a constant); its 95 % CI."""
    ok = np.isfinite(x) & np.isfinite(y)
    for g in given:
        ok &= np.isfinite(g)
    design = np.column_stack([np.ones(ok.sum()), *(g[ok] for g in given)])
    rx = x[ok] - design @ np.linalg.lstsq(design, x[ok], rcond=None)[0]
    ry = y[ok] - design @ np.linalg.lstsq(design, y[ok], rcond=None)[0]
    r = float(stats.pearsonr(rx, ry)[0])
    lo, hi = _fisher_ci(r, int(ok.sum()), k=len(given))
    return r, f"{r:+.2f} [{lo:+.2f}, {hi:+.2f}]", int(ok.sum())


def correlation_table(
    frame: pd.DataFrame, feature_sets: dict[str, pd.DataFrame], baselines: dict[str, np.ndarray]
) -> pd.DataFrame:
    y = frame["y"].to_numpy(float)
    alpb = frame[ALPB_COLUMN].to_numpy(float)
    rows = []
    for column, how in FEATURES:
        name = f"{column}_{how}"
        for label, feats in feature_sets.items():
            x = feats[name].reindex(frame["system_id"]).to_numpy(float)
            if np.nanstd(x) == 0:
                continue
            ok = np.isfinite(x) & np.isfinite(y)
            row = {"feature": name, "samples": label, "n": int(ok.sum())}
            row["r(y)"] = f"{stats.pearsonr(x[ok], y[ok])[0]:+.2f}"
            for base, pred in baselines.items():
                row[f"partial r | {base}"] = partial_r(x, y, [pred])[1]
                row[f"partial r | {base} + ALPB"] = partial_r(x, y, [pred, alpb])[1]
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("example:") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pairs", type=Path, required=True, help="the pair table (Parquet)")
    parser.add_argument("--shards-a", type=Path, required=True, help="one solvent molecule")
    parser.add_argument("--shards-b", type=Path, required=True, help="several solvent molecules")
    parser.add_argument(
        "--oof",
        nargs="+",
        required=True,
        metavar="NAME=DIR",
        help="2D models' bench/reproduce.py folders (…/<table>/<model>) whose held-out "
        "predictions are the baselines",
    )
    parser.add_argument("--descriptors", type=Path, required=True, help="the ALPB table")
    parser.add_argument("--cache", type=Path, help="single-point cache (Parquet), reused")
    parser.add_argument("--csv", type=Path, help="also write the table here")
    args = parser.parse_args(argv)

    frame = pd.read_parquet(args.pairs).reset_index(drop=True)
    frame["system_id"] = [
        system_id_for(u, v) for u, v in zip(frame.solute_smiles, frame.solvent_smiles, strict=True)
    ]
    frame["y"] = frame["value"].astype(float)
    alpb = pd.read_parquet(args.descriptors).set_index("system_id")[ALPB_COLUMN]
    frame[ALPB_COLUMN] = alpb.reindex(frame["system_id"]).to_numpy(float)

    samples_b = read_samples(args.shards_b, set(frame["system_id"]))
    systems = set(samples_b["system_id"])
    samples_a = read_samples(args.shards_a, systems)
    both = systems & set(samples_a["system_id"])
    frame = frame[frame["system_id"].isin(both)].reset_index(drop=True)
    k_b = int(samples_b.groupby("system_id").size().max())
    n_solvent_b = int(samples_b["fragment_index"].map(lambda f: int(max(f))).max())
    feature_sets = {
        f"A: 1 molecule, {k_b} samples": system_features(samples_a[samples_a.k < k_b], args.cache),
        f"A: 1 molecule, all {int(samples_a.k.max()) + 1} samples": system_features(
            samples_a, args.cache
        ),
        f"B: {n_solvent_b} molecules, {k_b} samples": system_features(samples_b, args.cache),
    }

    all_pairs = pd.read_parquet(args.pairs, columns=["pair_id"])["pair_id"]
    baselines = {}
    for spec in args.oof:
        name, _, folder = spec.partition("=")
        oof = oof_predictions(Path(folder), pd.Index(all_pairs))
        baselines[f"{name} ({oof.name})"] = oof.reindex(frame["pair_id"]).to_numpy(float)

    print(f"systems in both folders and the table: {len(both)} ({len(frame)} pairs)")
    for label, feats in feature_sets.items():
        feats = feats.reindex(sorted(both))
        print(
            f"  {label}: {int(feats.n_samples.sum())} samples, {int(feats.n_ok.sum())} ok, "
            f"{int(feats.n_qc_flagged.sum())} QC-flagged"
        )
    y = frame["y"].to_numpy(float)
    for name, pred in baselines.items():
        rmse = float(np.sqrt(np.nanmean((y - pred) ** 2)))
        print(f"  {name}: out-of-fold RMSE {rmse:.3f} on these pairs")
    table = correlation_table(frame, feature_sets, baselines)
    print()
    print(table.to_markdown(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
