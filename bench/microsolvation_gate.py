"""Does a shell of several solvent molecules carry what one solvent molecule does not? (prints
tables; issue 10, a follow-up of the information gate, docs/info_gate.md)

The gate found that the samples' features (one solvent molecule per complex) add almost nothing to
a tuned 2D model. One molecule may simply be too little solvent. This script compares the same
features from two shard folders of the same systems, made alike except for ``samples.n_solvent``
(folder A: one solvent molecule, folder B: several), on the systems both hold and the pair table
has.

Per sample (ok samples only):

* ``e_int``: the interaction energy the shards store, E(complex) − E(solute) − n·E(solvent) with
  relaxed references; for n > 1 it includes the solvent molecules' binding to each other;
* ``e_vert``: the solute–shell interaction at the complex's own geometry, E(complex) −
  E(solute at that geometry) − E(all solvent molecules together at that geometry): two single
  points per sample with the engine settings the shards record (GFN2-xTB), cached in ``--cache``.
  It leaves out the solvent molecules' binding to each other and every deformation term, so it
  means the same for one molecule and for a shell;
* solute–solvent contacts (``pairfactory.ml.sample_features.sample_contacts``).

Per system: the summaries of ``pairfactory.ml.sample_features`` over the samples the gate's QC
keeps, the QC applied to ``e_vert`` (which, unlike ``e_int``, does not grow with the number of
solvent molecules). Per feature: Pearson r with experiment; the partial r given a 2D model's
out-of-fold prediction, and given it and ALPB ΔG_solv; for folder B also given the prediction
and the same feature from all of folder A's samples: what the shell knows that neither the 2D
model nor the single molecules know (``pairfactory.ml.statistics.partial_correlation``: Fisher-z
95 % intervals, not corrected for the number of features, so name the primary one in advance).

The 2D model's out-of-fold prediction of a pair is the mean, over the repeats of a
``bench/reproduce.py`` results folder, of its prediction in the fold that held it out (valid or
test half; the valid half chose that fold's early-stopping epoch, as in the gate); each repeat
must hold out every pair once. Folder A's features are given twice: from its first ``len(B's
samples)`` samples (as many complexes as B) and from all of them (8 one-molecule samples against
2 four-molecule ones place as many solvent molecules).

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
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from pairfactory.fileio import atomic_write
from pairfactory.ml.sample_features import (
    QCSettings,
    contact_summary,
    energy_summary,
    flag_outliers,
    sample_contacts,
)
from pairfactory.ml.sample_sets import read_samples
from pairfactory.ml.statistics import partial_correlation
from pairfactory.qm.engines import build_engine
from pairfactory.qm.engines.base import Engine
from pairfactory.qm.plan import system_id_for
from pairfactory.qm.shards import STATUS_OK
from pairfactory.units import HARTREE_TO_KCAL_PER_MOL

# what the summaries need (the sample sets' reader reads no energies by default)
COLUMNS = [
    "sample_id",
    "system_id",
    "solute_smiles",
    "k",
    "status",
    "n_solvent",
    "atomic_numbers",
    "fragment_index",
    "final_positions_angstrom",
    "energy_hartree",
    "interaction_energy_kcal_mol",
    "engine_settings_json",
]
ALPB_COLUMN = "dg_solv_alpb_kcal_mol"
PRIMARY_FEATURE = "e_vert_min_kcal_mol"  # the shell's best contact: the gate's best feature's kind
FEATURES = [
    "e_int_min_kcal_mol",
    "e_int_median_kcal_mol",
    PRIMARY_FEATURE,
    "e_vert_median_kcal_mol",
    "e_vert_boltzmann_kcal_mol",
    "contacts_lt_3p0_angstrom_median",
    "hbond_contacts_median",
    "hbond_contacts_max",
]
CACHE_FLUSH_EVERY = 200  # new single points between cache writes: a stopped run keeps its work


def shards_engine(samples: pd.DataFrame) -> Engine:
    """The engine the shards' samples were optimized with (one settings record per folder)."""
    records = samples["engine_settings_json"].dropna().unique()
    if len(records) != 1:
        raise SystemExit(f"expected one engine setting in a shard folder, found {len(records)}")
    settings = json.loads(records[0])
    name = settings.pop("engine")
    return build_engine({"name": name, name: settings})


def _geometry_key(sample_id: str, z: np.ndarray, xyz: np.ndarray) -> str:
    """A sample's identity with its geometry: sample_id alone does not change with n_solvent."""
    digest = hashlib.sha256(z.astype(np.int64).tobytes() + xyz.round(6).tobytes()).hexdigest()
    return f"{sample_id}-{digest[:16]}"


def vertical_energies(samples: pd.DataFrame, cache_path: Path | None) -> pd.Series:
    """E_vert (kcal/mol) of every ok sample: E(complex) − E(fragment 0) − E(fragments ≥ 1), the
    two fragment energies single points at the complex's final geometry. NaN for other samples."""
    known: dict[str, float] = {}
    if cache_path is not None and cache_path.is_file():
        cached = pd.read_parquet(cache_path)
        known = dict(zip(cached["key"], cached["e_vert_kcal_mol"], strict=True))
    ok = ((samples["status"] == STATUS_OK) & samples["energy_hartree"].notna()).to_numpy()
    out = np.full(len(samples), np.nan)
    engine = shards_engine(samples) if ok.any() else None
    n_new = 0
    for i in tqdm(np.flatnonzero(ok), desc="single points", unit="sample"):
        row = samples.iloc[i]
        z = np.asarray(row["atomic_numbers"], dtype=int)
        xyz = np.asarray(row["final_positions_angstrom"], dtype=float).reshape(-1, 3)
        key = _geometry_key(row["sample_id"], z, xyz)
        if key not in known:
            _require_neutral_closed_shell(row["solute_smiles"], z)
            solute = np.asarray(row["fragment_index"], dtype=int) == 0
            e_solute = engine.energy(z[solute], xyz[solute])
            e_shell = engine.energy(z[~solute], xyz[~solute])
            e_vert = float(row["energy_hartree"]) - e_solute - e_shell
            known[key] = e_vert * HARTREE_TO_KCAL_PER_MOL
            n_new += 1
            if cache_path is not None and n_new % CACHE_FLUSH_EVERY == 0:
                _write_cache(cache_path, known)
        out[i] = known[key]
    if cache_path is not None and n_new:
        _write_cache(cache_path, known)
    return pd.Series(out, index=samples.index)


def _require_neutral_closed_shell(solute_smiles: str, z: np.ndarray) -> None:
    # the fragments' single points run as neutral singlets; the complex ran at the plan's charge
    from rdkit import Chem

    mol = Chem.MolFromSmiles(solute_smiles)
    charged = mol is None or Chem.GetFormalCharge(mol) != 0  # a nitro group's +/− is neutral
    if charged or int(z.sum()) % 2:
        raise SystemExit(
            f"{solute_smiles}: a charged or open-shell complex; E_vert is defined here for neutral "
            "closed-shell molecules only"
        )


def _write_cache(path: Path, known: dict[str, float]) -> None:
    table = pd.DataFrame({"key": list(known), "e_vert_kcal_mol": list(known.values())})
    atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))


def sample_table(samples: pd.DataFrame, cache_path: Path | None) -> pd.DataFrame:
    """The samples with their ``e_vert_kcal_mol`` and contacts (ok samples; NaN otherwise)."""
    e_vert = vertical_energies(samples, cache_path)
    contacts = [
        asdict(sample_contacts(z, f, x)) if ok else {}
        for z, f, x, ok in zip(
            samples["atomic_numbers"],
            samples["fragment_index"],
            samples["final_positions_angstrom"],
            e_vert.notna(),
            strict=True,
        )
    ]
    extra = pd.DataFrame(contacts, index=samples.index).assign(e_vert_kcal_mol=e_vert)
    return pd.concat([samples, extra], axis=1)


def system_summaries(table: pd.DataFrame) -> pd.DataFrame:
    """Per system of a ``sample_table``: counts, and the e_int, e_vert and contact summaries over
    its kept samples."""
    e_vert = table["e_vert_kcal_mol"]
    # the gate's QC, on the energy that does not scale with the number of solvent molecules
    qc = flag_outliers(table.assign(interaction_energy_kcal_mol=e_vert), QCSettings())
    rows = []
    for system_id, group in table.groupby("system_id", sort=True):
        flags = qc.loc[group.index]
        used = group[flags["used"]]
        vert = energy_summary(e_vert[used.index].to_numpy())
        rows.append(
            {
                "system_id": system_id,
                "n_samples": len(group),
                "n_ok": int(flags["ok"].sum()),
                "n_qc_flagged": int(flags["qc_flagged"].sum()),
                **energy_summary(used["interaction_energy_kcal_mol"].to_numpy(float)),
                **{name.replace("e_int_", "e_vert_"): value for name, value in vert.items()},
                **contact_summary(used),
            }
        )
    return pd.DataFrame(rows).set_index("system_id")


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


def _cell(r: float, lo: float, hi: float) -> str:
    return f"{r:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def correlation_table(
    frame: pd.DataFrame,
    feature_sets: dict[str, pd.DataFrame],
    baselines: dict[str, np.ndarray],
    reference: str,
) -> pd.DataFrame:
    """One row per feature and sample set; ``reference`` names the one-molecule set that the
    several-molecule set (the last) is also tested beyond."""
    y = frame["y"].to_numpy(float)
    alpb = frame[ALPB_COLUMN].to_numpy(float)
    shell = list(feature_sets)[-1]
    rows = []
    for name in FEATURES:
        for label, feats in feature_sets.items():
            x = feats[name].reindex(frame["system_id"]).to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() < 10 or np.std(x[ok]) == 0:
                continue
            row = {"feature": name, "samples": label, "n": int(ok.sum())}
            row["r(y)"] = f"{stats.pearsonr(x[ok], y[ok])[0]:+.2f}"
            for base, pred in baselines.items():
                row[f"partial r given {base}"] = _cell(*partial_correlation(x, y, [pred])[:3])
                both = partial_correlation(x, y, [pred, alpb])
                row[f"given {base} + ALPB"] = _cell(*both[:3])
                beyond = ""
                if label == shell:
                    single = feature_sets[reference][name].reindex(frame["system_id"])
                    given = [pred, single.to_numpy(float)]
                    beyond = _cell(*partial_correlation(x, y, given)[:3])
                row[f"given {base} + A (all)"] = beyond
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
    all_pairs = pd.Index(frame["pair_id"])  # the baselines' folds hold out every one of them
    frame["system_id"] = [
        system_id_for(u, v) for u, v in zip(frame.solute_smiles, frame.solvent_smiles, strict=True)
    ]
    frame["y"] = frame["value"].astype(float)
    alpb = pd.read_parquet(args.descriptors).set_index("system_id")[ALPB_COLUMN]
    frame[ALPB_COLUMN] = alpb.reindex(frame["system_id"]).to_numpy(float)

    samples_b = read_samples(args.shards_b, frame["system_id"], COLUMNS)
    samples_a = read_samples(args.shards_a, samples_b["system_id"], COLUMNS)
    both = set(samples_a["system_id"])
    frame = frame[frame["system_id"].isin(both)].reset_index(drop=True)
    samples_b = samples_b[samples_b["system_id"].isin(both)]
    k_b = int(samples_b["k"].max()) + 1
    n_solvent_b = int(samples_b["n_solvent"].max())
    reference = f"A: 1 molecule, all {int(samples_a['k'].max()) + 1} samples"
    # the single points and contacts once per folder; A's first k_b samples are a subset
    table_a = sample_table(samples_a, args.cache)
    feature_sets = {
        f"A: 1 molecule, {k_b} samples": system_summaries(table_a[table_a["k"] < k_b]),
        reference: system_summaries(table_a),
        f"B: {n_solvent_b} molecules, {k_b} samples": system_summaries(
            sample_table(samples_b, args.cache)
        ),
    }

    baselines: dict[str, np.ndarray] = {}
    repeats: dict[str, str] = {}
    for spec in args.oof:
        name, _, folder = spec.partition("=")
        oof = oof_predictions(Path(folder), all_pairs)
        baselines[name] = oof.reindex(frame["pair_id"]).to_numpy(float)
        repeats[name] = oof.name

    print(f"systems in both folders and the table: {len(both)} ({len(frame)} pairs)")
    for label, feats in feature_sets.items():
        print(
            f"  {label}: {int(feats.n_samples.sum())} samples, {int(feats.n_ok.sum())} ok, "
            f"{int(feats.n_qc_flagged.sum())} QC-flagged"
        )
    y = frame["y"].to_numpy(float)
    for name, pred in baselines.items():
        rmse = float(np.sqrt(np.nanmean((y - pred) ** 2)))
        print(f"  {name} (mean of {repeats[name]}): out-of-fold RMSE {rmse:.3f} on these pairs")
    table = correlation_table(frame, feature_sets, baselines, reference)
    print()
    print(table.to_markdown(index=False))
    print(
        f"\nprimary feature: {PRIMARY_FEATURE}; the other intervals are 95 % each, not corrected "
        f"for the {len(table)} rows"
    )
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
