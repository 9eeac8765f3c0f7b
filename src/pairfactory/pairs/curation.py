"""The rules every dataset shares: raw rows -> canonical pairs per target, plus rejects and counts.

A dataset module turns its raw file into a ``RawPairs`` frame (one row per raw data row, strings as
read, dataset rules already applied as preset rejections or SMILES overrides); ``build_curated``
then
canonicalises every SMILES once, rejects rows for every target (SMILES problems) or for one target
(value problems), flags duplicates and solid-state rows, hashes ``pair_id`` and reconciles the
counts.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pairfactory.pairs import schema as S
from pairfactory.pairs.elements import SUPPORTED_ELEMENTS, unsupported_elements
from pairfactory.pairs.smiles import SmilesResult, canonicalize, canonicalize_many
from pairfactory.pairs.values import ParsedValue, parse_value

log = logging.getLogger(__name__)

# Columns of the RawPairs frame that dataset modules fill (besides one raw-value column per target).
SOLUTE_INPUT = "solute_input"  # the SMILES to canonicalise: the raw one, or an override's
SOLVENT_INPUT = "solvent_input"
PRESET_REASON = "preset_reason"  # a dataset rule's row rejection (e.g. gas_phase_solvent), or ""
PRESET_DETAIL = "preset_detail"
RAW_FRAME_COLUMNS: tuple[str, ...] = (
    S.SOURCE_ROW,
    S.SOLUTE_RAW,
    S.SOLVENT_RAW,
    SOLUTE_INPUT,
    SOLVENT_INPUT,
    S.SMILES_OVERRIDE,
    S.SOLUTE_NAME,
    S.SOLVENT_NAME,
    S.SOURCE_TAGS,
    PRESET_REASON,
    PRESET_DETAIL,
)


class ReconciliationError(RuntimeError):
    """Rows in != kept + rejected: a bug in curation, never a user error."""


Transform = Callable[[float], ParsedValue]


@dataclass(frozen=True)
class TargetColumn:
    """One target of a dataset: where its raw value sits and how it becomes the stored value."""

    target: str
    unit: str
    raw_column: str
    transform: Transform | None = None


@dataclass
class RawPairs:
    """A dataset's raw rows, ready for the shared rules."""

    dataset: str
    source: Path
    frame: pd.DataFrame
    targets: list[TargetColumn]
    # which SMILES the dataset accepts: charged/radical/multi-fragment molecules rejected or not
    closed_shell_only: bool = False
    # Chromophore marks film/solid measurements by writing the chromophore as the solvent
    detect_solid_state: bool = False
    exclude_solid_state: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class CuratedDataset:
    """The curated pair tables of one dataset (one per target), its rejects and its summary."""

    dataset: str
    tables: dict[str, pd.DataFrame]
    rejects: pd.DataFrame
    summary: dict[str, Any]


def ln_positive(value: float) -> ParsedValue:
    """Natural log of a positive quantity (lifetimes); a value <= 0 has no log and is rejected."""
    if value <= 0:
        return ParsedValue(
            None, S.NON_POSITIVE_LIFETIME, f"lifetime {value!r} ns <= 0 cannot be logged"
        )
    return ParsedValue(math.log(value), None, "")


def make_pair_id(dataset: str, target: str, solute: str, solvent: str, source_row: int) -> str:
    """Stable 16-hex id: sha256 over dataset, target, canonical solute, canonical solvent, source
    row."""
    key = "\x1f".join((dataset, target, solute, solvent, str(int(source_row))))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _none_if_blank(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def _row_rejection(
    raw: RawPairs, preset: str, preset_detail: str, solute: SmilesResult, solvent: SmilesResult
) -> tuple[str, str] | None:
    """The reason a row is rejected for every target, in a fixed order of precedence, or None."""
    if preset:
        return preset, preset_detail
    for role, result in (("solute", solute), ("solvent", solvent)):
        if not result.ok:
            return str(result.reason), f"{role} {result.raw!r}: {result.detail}"
    for role, result in (("solute", solute), ("solvent", solvent)):
        unsupported = unsupported_elements(result.elements)
        if unsupported:
            return (
                S.UNSUPPORTED_ELEMENT,
                f"{role} {result.canonical}: element(s) {', '.join(unsupported)} not supported "
                f"(supported: {', '.join(SUPPORTED_ELEMENTS)})",
            )
    if raw.closed_shell_only:
        for role, result in (("solute", solute), ("solvent", solvent)):
            problem = result.closed_shell_problem()
            if problem:
                return problem[0], f"{role} {problem[1]}"
    if raw.detect_solid_state and raw.exclude_solid_state and solute.canonical == solvent.canonical:
        return (
            S.SOLID_STATE_EXCLUDED,
            "solvent SMILES equals the chromophore (solid/film measurement)",
        )
    return None


def build_curated(raw: RawPairs) -> CuratedDataset:
    """Apply the shared rules to ``raw``; the counts are reconciled before returning."""
    frame = raw.frame
    missing = [c for c in RAW_FRAME_COLUMNS if c not in frame.columns] + [
        t.raw_column for t in raw.targets if t.raw_column not in frame.columns
    ]
    if missing:
        raise ValueError(f"{raw.dataset}: RawPairs frame lacks columns {missing}")
    n_rows = len(frame)
    results = canonicalize_many(
        list(frame[SOLUTE_INPUT]) + list(frame[SOLVENT_INPUT]),
        desc=f"{raw.dataset}: canonicalising SMILES",
    )

    def lookup(value: object) -> SmilesResult:
        return (
            results[value] if isinstance(value, str) and value in results else canonicalize(value)
        )

    solutes = [lookup(v) for v in frame[SOLUTE_INPUT]]
    solvents = [lookup(v) for v in frame[SOLVENT_INPUT]]
    source_rows = [int(v) for v in frame[S.SOURCE_ROW]]
    solute_raw = [_none_if_blank(v) for v in frame[S.SOLUTE_RAW]]
    solvent_raw = [_none_if_blank(v) for v in frame[S.SOLVENT_RAW]]
    single_value_raw = raw.targets[0].raw_column if len(raw.targets) == 1 else None

    reject_records: list[dict[str, Any]] = []
    row_ok: list[bool] = []
    for i, (preset, detail) in enumerate(zip(frame[PRESET_REASON], frame[PRESET_DETAIL])):
        rejection = _row_rejection(
            raw, str(preset or ""), str(detail or ""), solutes[i], solvents[i]
        )
        row_ok.append(rejection is None)
        if rejection is not None:
            reject_records.append(
                {
                    S.DATASET: raw.dataset,
                    S.TARGET: None,
                    S.SOURCE_ROW: source_rows[i],
                    S.REASON: rejection[0],
                    S.DETAIL: rejection[1],
                    S.SOLUTE_RAW: solute_raw[i],
                    S.SOLVENT_RAW: solvent_raw[i],
                    S.VALUE_RAW: _none_if_blank(frame[single_value_raw].iat[i])
                    if single_value_raw
                    else None,
                }
            )
    n_row_rejected = n_rows - sum(row_ok)

    solid = [
        raw.detect_solid_state and s.canonical is not None and s.canonical == v.canonical
        for s, v in zip(solutes, solvents)
    ]
    tables: dict[str, pd.DataFrame] = {}
    for target in raw.targets:
        kept: list[dict[str, Any]] = []
        values_raw = list(frame[target.raw_column])
        for i in range(n_rows):
            if not row_ok[i]:
                continue
            parsed = parse_value(values_raw[i])
            if parsed.value is not None and target.transform is not None:
                parsed = target.transform(parsed.value)
            if parsed.value is None:
                reject_records.append(
                    {
                        S.DATASET: raw.dataset,
                        S.TARGET: target.target,
                        S.SOURCE_ROW: source_rows[i],
                        S.REASON: str(parsed.reason),
                        S.DETAIL: parsed.detail,
                        S.SOLUTE_RAW: solute_raw[i],
                        S.SOLVENT_RAW: solvent_raw[i],
                        S.VALUE_RAW: _none_if_blank(values_raw[i]),
                    }
                )
                continue
            solute, solvent = str(solutes[i].canonical), str(solvents[i].canonical)
            kept.append(
                {
                    S.PAIR_ID: make_pair_id(
                        raw.dataset, target.target, solute, solvent, source_rows[i]
                    ),
                    S.DATASET: raw.dataset,
                    S.TARGET: target.target,
                    S.SOLUTE_SMILES: solute,
                    S.SOLVENT_SMILES: solvent,
                    S.VALUE: float(parsed.value),
                    S.UNIT: target.unit,
                    S.SOURCE_ROW: source_rows[i],
                    S.SOLID_STATE: bool(solid[i]),
                    S.DUPLICATE_PAIR: False,
                    S.SMILES_OVERRIDE: bool(frame[S.SMILES_OVERRIDE].iat[i]),
                    S.SOLUTE_NAME: _none_if_blank(frame[S.SOLUTE_NAME].iat[i]),
                    S.SOLVENT_NAME: _none_if_blank(frame[S.SOLVENT_NAME].iat[i]),
                    S.SOURCE_TAGS: _none_if_blank(frame[S.SOURCE_TAGS].iat[i]),
                }
            )
        table = pd.DataFrame(kept, columns=list(S.PAIR_COLUMNS))
        if not table.empty:
            # repeated measurements of one pair stay (they are real data) but are marked, all
            # members
            table[S.DUPLICATE_PAIR] = table.duplicated(
                [S.SOLUTE_SMILES, S.SOLVENT_SMILES], keep=False
            )
        tables[target.target] = coerce_pair_frame(table)

    rejects = coerce_reject_frame(pd.DataFrame(reject_records, columns=list(S.REJECT_COLUMNS)))
    summary = summarize(raw, tables, rejects, n_rows)
    reconcile(raw.dataset, n_rows, source_rows, tables, rejects)
    log.info(
        "%s: %d raw rows, %d rejected for every target; kept per target: %s",
        raw.dataset,
        n_rows,
        n_row_rejected,
        ", ".join(f"{t}={len(df)}" for t, df in tables.items()),
    )
    return CuratedDataset(dataset=raw.dataset, tables=tables, rejects=rejects, summary=summary)


def coerce_pair_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Give a pair table the dtypes of PAIR_SCHEMA (stable across empty and full tables)."""
    table = table.reindex(columns=list(S.PAIR_COLUMNS))
    for column in (S.PAIR_ID, S.DATASET, S.TARGET, S.SOLUTE_SMILES, S.SOLVENT_SMILES, S.UNIT):
        table[column] = table[column].astype(object)
    table[S.VALUE] = table[S.VALUE].astype("float64")
    table[S.SOURCE_ROW] = table[S.SOURCE_ROW].astype("int64")
    for column in (S.SOLID_STATE, S.DUPLICATE_PAIR, S.SMILES_OVERRIDE):
        table[column] = table[column].astype(bool)
    for column in (S.SOLUTE_NAME, S.SOLVENT_NAME, S.SOURCE_TAGS):
        table[column] = table[column].astype(object).where(table[column].notna(), None)
    return table.reset_index(drop=True)


def coerce_reject_frame(rejects: pd.DataFrame) -> pd.DataFrame:
    rejects = rejects.reindex(columns=list(S.REJECT_COLUMNS))
    rejects[S.SOURCE_ROW] = rejects[S.SOURCE_ROW].astype("int64")
    for column in (
        S.DATASET,
        S.TARGET,
        S.REASON,
        S.DETAIL,
        S.SOLUTE_RAW,
        S.SOLVENT_RAW,
        S.VALUE_RAW,
    ):
        rejects[column] = rejects[column].astype(object).where(rejects[column].notna(), None)
    # row-level rejects first, then per target, each in file order: a stable, readable file
    order = rejects[S.TARGET].fillna("").map(lambda t: (t != "", t))
    rejects = rejects.assign(_order=order).sort_values(["_order", S.SOURCE_ROW], kind="stable")
    return rejects.drop(columns="_order").reset_index(drop=True)


def rejects_for_target(rejects: pd.DataFrame, target: str) -> pd.DataFrame:
    """The rejects that remove rows from ``target``'s table: its own plus those for every target."""
    return rejects[rejects[S.TARGET].isna() | (rejects[S.TARGET] == target)]


def reconcile(
    dataset: str,
    n_rows: int,
    source_rows: list[int],
    tables: dict[str, pd.DataFrame],
    rejects: pd.DataFrame,
) -> None:
    """Raise ReconciliationError unless every raw row is, per target, exactly once kept or
    rejected."""
    all_rows = set(source_rows)
    if len(all_rows) != n_rows:
        raise ReconciliationError(
            f"{dataset}: source_row values are not unique ({len(all_rows)} for {n_rows} rows)"
        )
    for target, table in tables.items():
        rejected = rejects_for_target(rejects, target)
        kept_rows, rejected_rows = list(table[S.SOURCE_ROW]), list(rejected[S.SOURCE_ROW])
        if len(table) + len(rejected) != n_rows:
            raise ReconciliationError(
                f"{dataset}/{target}: {n_rows} rows in but {len(table)} kept + {len(rejected)} "
                f"rejected"
            )
        if (
            set(kept_rows) | set(rejected_rows) != all_rows
            or len(set(kept_rows + rejected_rows)) != n_rows
        ):
            raise ReconciliationError(
                f"{dataset}/{target}: kept and rejected rows overlap or miss raw rows"
            )


def summarize(
    raw: RawPairs, tables: dict[str, pd.DataFrame], rejects: pd.DataFrame, n_rows: int
) -> dict[str, Any]:
    """Counts per target (in / kept / rejected by reason and flags) as plain JSON-able values."""
    from pairfactory.fileio import file_sha256

    targets: dict[str, Any] = {}
    for target in raw.targets:
        table = tables[target.target]
        rejected = rejects_for_target(rejects, target.target)
        values = table[S.VALUE]
        targets[target.target] = {
            "unit": target.unit,
            "rows_in": n_rows,
            "kept": len(table),
            "rejected": len(rejected),
            "rejected_by_reason": dict(sorted(Counter(rejected[S.REASON]).items())),
            "duplicate_pair_rows": int(table[S.DUPLICATE_PAIR].sum()),
            "solid_state_rows": int(table[S.SOLID_STATE].sum()),
            "smiles_override_rows": int(table[S.SMILES_OVERRIDE].sum()),
            "unique_solutes": int(table[S.SOLUTE_SMILES].nunique()),
            "unique_solvents": int(table[S.SOLVENT_SMILES].nunique()),
            "unique_pairs": int(len(table.drop_duplicates([S.SOLUTE_SMILES, S.SOLVENT_SMILES]))),
            "value_min": round(float(values.min()), 6) if len(values) else None,
            "value_max": round(float(values.max()), 6) if len(values) else None,
            "value_mean": round(float(values.mean()), 6) if len(values) else None,
        }
    return {
        "dataset": raw.dataset,
        "input": {"path": str(raw.source), "sha256": file_sha256(raw.source), "rows": n_rows},
        "settings": dict(raw.settings),
        "rows_rejected_for_every_target": int(rejects[S.TARGET].isna().sum()),
        "targets": targets,
    }
