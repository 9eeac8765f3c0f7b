"""Per-system summaries of the noisy QM samples: robust interaction-energy statistics and contacts.

Input: shard files (docs/shards.md), one row per (system, sample k). Output: one row per system with
the number of samples, ok samples, failures and QC-flagged samples, robust summaries of the
interaction energy of the kept samples (kcal/mol) and contact statistics of their final geometries
(Å, counts). Only ``status == "ok"`` samples contribute values; every other status is counted as a
failure. Systems whose samples all failed or were flagged keep their row, with NaN values, so that
systems in = systems out.

QC rule (``QCSettings``): an ok sample is flagged, and left out of every summary, when

* its interaction energy lies more than ``max(mad_factor · 1.4826 · MAD, min_excess_kcal_mol)``
  above the median of its system's ok samples (one-sided, high side), or
* it is above ``max_interaction_kcal_mol`` (+20) or below ``min_interaction_kcal_mol`` (−50).

Why: on FreeSolv-642 × 8 and MNSol × 4 (15,240 ok samples, GFN2-xTB, one solvent molecule) the
deviation from the system median lies within [−7.7, +7.3] kcal/mol for 99.8 % of the samples and
every interaction energy but one lies in [−14.1, +9.7]; the one exception is cycloheptanol k = 0 at
+81.9 kcal/mol, which no non-covalent contact can give: the complex ended in another chemical
state. Moderately positive values (up to about +6) are *systematic* for some systems (all samples
of C[C@@H]1CCCC[C@@H]1C, median +4.3), presumably a conformer mismatch: the complex's solute stays
in a higher-energy conformer than the isolated reference (one to three conformers, the lowest
kept), so positive values alone are not flagged. The low side is left alone (except for the −50
bound, a formed bond) because the lowest energy is the best contact found, the quantity the minimum
is meant to capture. The floor of 10 kcal/mol keeps a system whose samples happen to agree closely
(small MAD) from losing ordinary samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pairfactory.errors import UserError
from pairfactory.qm.shards import SHARD_GLOB, STATUS_OK, read_shard, shard_paths

# The shard columns read here (docs/shards.md).
SHARD_COLUMNS = [
    "system_id",
    "solute_smiles",
    "solvent_smiles",
    "k",
    "status",
    "atomic_numbers",
    "fragment_index",
    "final_positions_angstrom",
    "interaction_energy_kcal_mol",
]
# MAD → σ for a normal distribution.
MAD_TO_SIGMA = 1.4826
# kT at 298.15 K in kcal/mol (R·T = 1.987204e-3 · 298.15).
KT_298_KCAL_MOL = 0.592484
HBOND_DONOR_H = 1
HBOND_ACCEPTORS = (7, 8, 9)  # N, O, F
TRIM_PROPORTION = 0.25  # cut from each end: 2 of 8 samples, 1 of 4


@dataclass(frozen=True)
class QCSettings:
    """Which ok samples are outliers (see the module docstring for the reasons)."""

    mad_factor: float = 5.0
    min_excess_kcal_mol: float = 10.0
    max_interaction_kcal_mol: float = 20.0
    min_interaction_kcal_mol: float = -50.0


@dataclass(frozen=True)
class ContactSettings:
    close_angstrom: float = 2.5
    near_angstrom: float = 3.0
    hbond_angstrom: float = 2.5


@dataclass(frozen=True)
class SampleContacts:
    """Contacts between the solute (fragment 0) and the solvent copies (fragments ≥ 1)."""

    contacts_lt_2p5_angstrom: int
    contacts_lt_3p0_angstrom: int
    min_distance_angstrom: float
    hbond_contacts: int  # H…N/O/F below 2.5 Å, H and acceptor in different fragments


# Per-system output columns, in order, with units in the names (counts are plain numbers).
ENERGY_COLUMNS = [
    "e_int_min_kcal_mol",
    "e_int_median_kcal_mol",
    "e_int_trimmed_mean_kcal_mol",
    "e_int_boltzmann_kcal_mol",
    "e_int_mad_kcal_mol",
    "e_int_iqr_kcal_mol",
]
CONTACT_COLUMNS = [
    "contacts_lt_2p5_angstrom_median",
    "contacts_lt_3p0_angstrom_median",
    "min_distance_angstrom_median",
    "min_distance_angstrom_min",
    "hbond_contacts_median",
    "hbond_contacts_max",
    "hbond_sample_fraction",
    "hbond_contacts_at_min_energy",
]
# n_samples = n_failed + n_qc_flagged + n_used; n_ok = n_samples - n_failed
QUALITY_COUNT_COLUMNS = ["n_samples", "n_ok", "n_failed", "n_qc_flagged"]
COUNT_COLUMNS = [*QUALITY_COUNT_COLUMNS, "n_used"]
SYSTEM_COLUMNS = [
    "system_id",
    "solute_smiles",
    "solvent_smiles",
    *COUNT_COLUMNS,
    *ENERGY_COLUMNS,
    *CONTACT_COLUMNS,
]


def sample_contacts(
    atomic_numbers: Sequence[int],
    fragment_index: Sequence[int],
    positions_angstrom: Sequence[float] | np.ndarray,
    settings: ContactSettings = ContactSettings(),
) -> SampleContacts:
    """Solute–solvent contact statistics of one geometry (positions flattened or N × 3)."""
    z = np.asarray(atomic_numbers, dtype=int)
    frag = np.asarray(fragment_index, dtype=int)
    xyz = np.asarray(positions_angstrom, dtype=float).reshape(-1, 3)
    if not (len(z) == len(frag) == len(xyz)):
        raise ValueError(f"{len(z)} atoms, {len(frag)} fragment indices, {len(xyz)} positions")
    solute = frag == 0
    solvent = ~solute
    if not solute.any() or not solvent.any():
        return SampleContacts(0, 0, math.nan, 0)
    d = np.linalg.norm(xyz[solute][:, None, :] - xyz[solvent][None, :, :], axis=-1)
    # H-bond-like: an H of one side near an N/O/F of the other, in either direction.
    h_u, h_v = z[solute] == HBOND_DONOR_H, z[solvent] == HBOND_DONOR_H
    a_u, a_v = np.isin(z[solute], HBOND_ACCEPTORS), np.isin(z[solvent], HBOND_ACCEPTORS)
    hbond_pairs = (h_u[:, None] & a_v[None, :]) | (a_u[:, None] & h_v[None, :])
    return SampleContacts(
        contacts_lt_2p5_angstrom=int((d < settings.close_angstrom).sum()),
        contacts_lt_3p0_angstrom=int((d < settings.near_angstrom).sum()),
        min_distance_angstrom=float(d.min()),
        hbond_contacts=int((hbond_pairs & (d < settings.hbond_angstrom)).sum()),
    )


def read_sample_contacts(
    paths: Iterable[str | Path],
    contacts: ContactSettings = ContactSettings(),
    progress: bool = False,
) -> pd.DataFrame:
    """One row per sample: identity, status, interaction energy and (ok samples) contacts."""
    rows = []
    paths = list(paths)
    iterator: Iterable[Path | str] = paths
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(paths, desc="read shards", unit="shard")
    for path in iterator:
        table = read_shard(path, columns=SHARD_COLUMNS)
        for rec in table.to_pylist():
            row = {
                "system_id": rec["system_id"],
                "solute_smiles": rec["solute_smiles"],
                "solvent_smiles": rec["solvent_smiles"],
                "k": rec["k"],
                "status": rec["status"],
                "interaction_energy_kcal_mol": _float_or_nan(rec["interaction_energy_kcal_mol"]),
            }
            geometry_ok = rec["status"] == STATUS_OK and rec["final_positions_angstrom"]
            if geometry_ok:
                row.update(
                    asdict(
                        sample_contacts(
                            rec["atomic_numbers"],
                            rec["fragment_index"],
                            rec["final_positions_angstrom"],
                            contacts,
                        )
                    )
                )
            rows.append(row)
    frame = pd.DataFrame(rows)
    for column in SampleContacts.__dataclass_fields__:
        if column not in frame:
            frame[column] = np.nan
    return frame


def flag_outliers(samples: pd.DataFrame, qc: QCSettings = QCSettings()) -> pd.DataFrame:
    """Add ``ok`` (status ok and an energy), ``qc_flagged`` and ``used`` columns (a copy)."""
    out = samples.copy()
    energy = out["interaction_energy_kcal_mol"].astype(float)
    out["ok"] = (out["status"] == STATUS_OK) & energy.notna()
    ok_energy = energy.where(out["ok"])
    median = ok_energy.groupby(out["system_id"]).transform("median")
    mad = (ok_energy - median).abs().groupby(out["system_id"]).transform("median")
    threshold = np.maximum(qc.mad_factor * MAD_TO_SIGMA * mad, qc.min_excess_kcal_mol)
    flagged = (
        (ok_energy - median > threshold)
        | (ok_energy > qc.max_interaction_kcal_mol)
        | (ok_energy < qc.min_interaction_kcal_mol)
    )
    out["qc_flagged"] = out["ok"] & flagged.fillna(False)
    out["used"] = out["ok"] & ~out["qc_flagged"]
    return out


def quality_counts(flagged: pd.DataFrame) -> dict[str, int]:
    """QUALITY_COUNT_COLUMNS of one system's samples (``flag_outliers`` output)."""
    n_ok = int(flagged["ok"].sum())
    return {
        "n_samples": len(flagged),
        "n_ok": n_ok,
        "n_failed": len(flagged) - n_ok,
        "n_qc_flagged": int(flagged["qc_flagged"].sum()),
    }


def summarize_systems(samples: pd.DataFrame, qc: QCSettings = QCSettings()) -> pd.DataFrame:
    """One row per system of ``samples`` (``read_sample_contacts`` output) with SYSTEM_COLUMNS."""
    flagged = flag_outliers(samples, qc)
    rows = []
    for system_id, group in flagged.groupby("system_id", sort=True):
        used = group[group["used"]]
        energies = used["interaction_energy_kcal_mol"].to_numpy(dtype=float)
        row: dict[str, object] = {
            "system_id": system_id,
            "solute_smiles": group["solute_smiles"].iloc[0],
            "solvent_smiles": group["solvent_smiles"].iloc[0],
            **quality_counts(group),
            "n_used": len(used),
        }
        row.update(energy_summary(energies))
        row.update(contact_summary(used))
        rows.append(row)
    return pd.DataFrame(rows, columns=SYSTEM_COLUMNS)


def energy_summary(energies_kcal_mol: np.ndarray) -> dict[str, float]:
    """Robust summaries of one system's kept interaction energies (NaN when there are none)."""
    e = np.sort(np.asarray(energies_kcal_mol, dtype=float))
    if e.size == 0:
        return dict.fromkeys(ENERGY_COLUMNS, math.nan)
    cut = int(TRIM_PROPORTION * e.size)
    median = float(np.median(e))
    q75, q25 = np.percentile(e, [75, 25])
    # Soft minimum: −kT ln ⟨exp(−E/kT)⟩, a Boltzmann-weighted contact energy over the samples.
    shifted = -(e - e.min()) / KT_298_KCAL_MOL
    boltzmann = float(e.min() - KT_298_KCAL_MOL * np.log(np.mean(np.exp(shifted))))
    return {
        "e_int_min_kcal_mol": float(e[0]),
        "e_int_median_kcal_mol": median,
        "e_int_trimmed_mean_kcal_mol": float(e[cut : e.size - cut].mean()),
        "e_int_boltzmann_kcal_mol": boltzmann,
        "e_int_mad_kcal_mol": float(np.median(np.abs(e - median))),
        "e_int_iqr_kcal_mol": float(q75 - q25),
    }


def contact_summary(used: pd.DataFrame) -> dict[str, float]:
    """Contact statistics over one system's kept samples (NaN when there are none)."""
    if used.empty:
        return dict.fromkeys(CONTACT_COLUMNS, math.nan)
    hb = used["hbond_contacts"].to_numpy(dtype=float)
    best = used["interaction_energy_kcal_mol"].to_numpy(dtype=float).argmin()
    return {
        "contacts_lt_2p5_angstrom_median": float(used["contacts_lt_2p5_angstrom"].median()),
        "contacts_lt_3p0_angstrom_median": float(used["contacts_lt_3p0_angstrom"].median()),
        "min_distance_angstrom_median": float(used["min_distance_angstrom"].median()),
        "min_distance_angstrom_min": float(used["min_distance_angstrom"].min()),
        "hbond_contacts_median": float(np.median(hb)),
        "hbond_contacts_max": float(hb.max()),
        "hbond_sample_fraction": float((hb > 0).mean()),
        "hbond_contacts_at_min_energy": float(hb[best]),
    }


def system_features(
    shards_dir: str | Path,
    qc: QCSettings = QCSettings(),
    contacts: ContactSettings = ContactSettings(),
    progress: bool = False,
) -> pd.DataFrame:
    """Read every shard of a folder and summarize per system (see ``summarize_systems``)."""
    paths = shard_paths(shards_dir)
    if not paths:
        raise UserError(f"no shard files ({SHARD_GLOB}) in {shards_dir}; run the optimize stage")
    return summarize_systems(read_sample_contacts(paths, contacts, progress=progress), qc)


def _float_or_nan(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]
