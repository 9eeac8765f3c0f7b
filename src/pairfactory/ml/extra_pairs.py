"""Extra training pairs: labelled pairs of another table added to the training role of each fold.

A fold's validation and test pairs come from its own table, as always; an extra table only adds
training pairs (e.g. CombiSolv-Exp's water pairs to FreeSolv-560). Which extra rows a fold may use
is decided per fold, so that nothing about the held-out molecules enters training:

- ``holdout: solute`` (default): no extra row whose solute is a solute of the fold's validation or
  test pairs, in any solvent;
- ``holdout: pair``: no extra row that is one of the fold's validation or test pairs (the solute
  may appear in other solvents: what a random split of a multi-solvent table allows anyway).

A fold of the scaffold split also leaves out every extra row whose solute has one of its held-out
Bemis–Murcko scaffolds, whatever the holdout: that split's promise is unseen scaffolds.

Molecules are compared by the InChIKey of the molecule without its stereo (blind to stereo and to
where a mobile H sits, not to isotopes), not by SMILES string: two sources rarely write a molecule
alike, and a held-out solute written another way must still be held out. An extra row that
repeats a training pair of the fold is dropped too (the table's own label stays; no pair counts
twice), and so is a later row of the extra table that repeats an earlier one. Every extra row ends
as used or with its reason, and the counts reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairfactory.errors import UserError
from pairfactory.ml.splits import FoldSplit, murcko_scaffolds
from pairfactory.pairs.smiles import molecule_key, readable_molecule_keys

log = logging.getLogger(__name__)

HOLDOUT_LEVELS = ("solute", "pair")
USED = "used"
# reasons an extra row is not used, in the order they are decided
OTHER_SOLVENT = "solvent_not_selected"
HELD_OUT_SCAFFOLD = "held_out_scaffold"
HELD_OUT_SOLUTE = "held_out_solute"
HELD_OUT_PAIR = "held_out_pair"
DUPLICATE_TRAINING_PAIR = "duplicate_of_training_pair"
DUPLICATE_EXTRA_PAIR = "duplicate_in_extra_table"
UNKEYED_MOLECULE = "no_inchikey"
OUTCOMES = (USED, OTHER_SOLVENT, UNKEYED_MOLECULE, HELD_OUT_SCAFFOLD, HELD_OUT_SOLUTE,
            HELD_OUT_PAIR, DUPLICATE_TRAINING_PAIR, DUPLICATE_EXTRA_PAIR)  # fmt: skip
DECISIONS_FILE = "extra_pairs.csv"


@dataclass(frozen=True)
class ExtraPairSettings:
    """Which extra table, and which of its rows a fold may train on."""

    path: Path
    holdout: str = "solute"
    # only extra rows in these solvents (as written by the user; compared as molecules); empty:
    # every solvent
    solvents: tuple[str, ...] = ()
    # the extra table's descriptor table (its dataset's `pairfactory solvation`), for a model that
    # reads a descriptor of every pair (alpb_input) or learns it as an auxiliary target
    descriptors: Path | None = None

    def __post_init__(self) -> None:
        if self.holdout not in HOLDOUT_LEVELS:
            raise UserError(
                f"extra-pairs holdout must be one of {', '.join(HOLDOUT_LEVELS)} "
                f"(got {self.holdout!r})"
            )
        readable_molecule_keys(
            self.solvents, "--extra-solvent, or evaluate.extra_pairs.solvents in the config"
        )

    def to_dict(self) -> dict[str, Any]:
        record = {"path": str(self.path), "holdout": self.holdout, "solvents": list(self.solvents)}
        if self.descriptors is not None:  # only when given: earlier records stay as they were
            record["descriptors"] = str(self.descriptors)
        return record


@dataclass(frozen=True)
class ExtraTraining:
    """One fold's use of the extra table."""

    rows: pd.DataFrame  # the extra rows added to training, in the extra table's order
    decisions: pd.DataFrame  # every extra row: pair_id, solute/solvent SMILES, outcome
    summary: dict[str, Any]  # for metrics.json: settings, rows in, used, counts per reason


def _keys(smiles: pd.Series) -> np.ndarray:
    return np.array([molecule_key(str(s)) for s in smiles], dtype=object)


def checked_extra_table(extra: pd.DataFrame, table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The extra pair table ``extra`` (read from ``path``), checked against the fold's table: the
    same unit (the targets may be named differently, e.g. a hydration free energy and a solvation
    free energy in water) and no shared pair id."""
    unit, extra_unit = str(table["unit"].iloc[0]), str(extra["unit"].iloc[0])
    if unit != extra_unit:
        raise UserError(
            f"extra pair table {path} is in {extra_unit}, the table in {unit}; give an "
            "extra table of the same quantity and unit"
        )
    target, extra_target = str(table["target"].iloc[0]), str(extra["target"].iloc[0])
    if target != extra_target:
        log.info(
            "extra pairs: target %s of %s is trained as %s (same unit, %s)",
            extra_target,
            path,
            target,
            unit,
        )
    clash = set(extra["pair_id"]) & set(table["pair_id"])
    if clash:
        raise UserError(
            f"extra pair table {path} shares {len(clash)} pair_id(s) with the table "
            f"(e.g. {sorted(clash)[0]}); give a table of another dataset"
        )
    return extra


def select_extra_training(
    extra: pd.DataFrame,
    table: pd.DataFrame,
    split: FoldSplit,
    settings: ExtraPairSettings,
    by_scaffold: bool = False,
) -> ExtraTraining:
    """Decide, for one fold, which extra rows join its training pairs (module docstring);
    ``by_scaffold`` for a fold of the scaffold split."""
    solute_keys = _keys(extra["solute_smiles"])
    solvent_keys = _keys(extra["solvent_smiles"])
    table_solute = _keys(table["solute_smiles"])
    table_solvent = _keys(table["solvent_smiles"])
    held_out = np.concatenate([split.valid, split.test]).astype(np.int64)
    train = np.asarray(split.train, dtype=np.int64)
    held_out_solutes = set(table_solute[held_out])
    held_out_pairs = set(zip(table_solute[held_out], table_solvent[held_out], strict=True))
    training_pairs = set(zip(table_solute[train], table_solvent[train], strict=True))
    wanted = readable_molecule_keys(settings.solvents, "extra-pairs solvents")
    wanted_solvents = set(wanted)
    present = set(solvent_keys)
    absent = [smiles for key, smiles in wanted.items() if key not in present]
    if absent:  # a typo would otherwise train on no extra pair at all, silently
        raise UserError(
            f"extra pair table {settings.path} has no pair in solvent(s) {', '.join(absent)}; "
            "check evaluate.extra_pairs.solvents (--extra-solvent), written as SMILES, e.g. O "
            "for water"
        )
    scaffolds = held_out_scaffolds = None
    if by_scaffold:
        scaffolds = murcko_scaffolds(extra["solute_smiles"].astype(str).tolist())
        held_out_scaffolds = set(
            murcko_scaffolds(table["solute_smiles"].iloc[held_out].astype(str).tolist())
        )

    outcome = np.full(len(extra), USED, dtype=object)
    seen: set[tuple[str, str]] = set()
    for i, (solute, solvent) in enumerate(zip(solute_keys, solvent_keys, strict=True)):
        if wanted_solvents and solvent not in wanted_solvents:
            outcome[i] = OTHER_SOLVENT
        elif solute is None or solvent is None:
            outcome[i] = UNKEYED_MOLECULE
        elif held_out_scaffolds is not None and scaffolds[i] in held_out_scaffolds:
            outcome[i] = HELD_OUT_SCAFFOLD
        elif settings.holdout == "solute" and solute in held_out_solutes:
            outcome[i] = HELD_OUT_SOLUTE
        elif (solute, solvent) in held_out_pairs:
            outcome[i] = HELD_OUT_PAIR
        elif (solute, solvent) in training_pairs:
            outcome[i] = DUPLICATE_TRAINING_PAIR
        elif (solute, solvent) in seen:
            outcome[i] = DUPLICATE_EXTRA_PAIR
        else:
            seen.add((solute, solvent))
    decisions = pd.DataFrame(
        {
            "pair_id": extra["pair_id"].to_numpy(),
            "solute_smiles": extra["solute_smiles"].to_numpy(),
            "solvent_smiles": extra["solvent_smiles"].to_numpy(),
            "outcome": outcome,
        }
    )
    counts = {name: int((outcome == name).sum()) for name in OUTCOMES}
    if sum(counts.values()) != len(extra):
        raise AssertionError(f"extra pairs: {len(extra)} rows in, {counts} out")
    rows = extra[outcome == USED].reset_index(drop=True)
    if rows.empty:
        log.warning(
            "extra pairs: none of the %d rows of %s is usable in this fold (%s)",
            len(extra),
            settings.path,
            {k: v for k, v in counts.items() if v},
        )
    summary = {
        **settings.to_dict(),
        "dataset": str(extra["dataset"].iloc[0]),
        "target": str(extra["target"].iloc[0]),
        "n_in": len(extra),
        "n_used": counts[USED],
        "not_used": {k: v for k, v in counts.items() if k != USED},
    }
    return ExtraTraining(rows=rows, decisions=decisions, summary=summary)


def with_extra_training(
    table: pd.DataFrame, split: FoldSplit, extra_rows: pd.DataFrame
) -> tuple[pd.DataFrame, FoldSplit]:
    """The table with the extra rows appended and the fold with them in its training role;
    validation and test rows keep their positions."""
    if extra_rows.empty:
        return table, split
    columns: Sequence[str] = list(table.columns)
    appended = extra_rows.reindex(columns=columns)
    # the fold trains on the table's target: the extra rows take its name (same unit, checked);
    # their dataset stays theirs
    appended["target"] = table["target"].iloc[0]
    combined = pd.concat([table, appended], ignore_index=True)
    new_rows = np.arange(len(table), len(combined), dtype=np.int64)
    train = np.sort(np.concatenate([np.asarray(split.train, dtype=np.int64), new_rows]))
    return combined, FoldSplit(fold=split.fold, train=train, valid=split.valid, test=split.test)
