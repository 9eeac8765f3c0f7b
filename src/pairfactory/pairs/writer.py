"""Writing and reading curated pair tables: Parquet with explicit schemas, written atomically.

Layout (docs/architecture.md): ``{out_dir}/{dataset}/{target}.parquet``, ``rejects.parquet``,
``summary.json`` and ``summary.md``. Every file is written with ``pairfactory.fileio.atomic_write``,
so a
reader never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pairfactory.errors import InputFileError
from pairfactory.fileio import atomic_write, atomic_write_text
from pairfactory.pairs import schema as S

if TYPE_CHECKING:
    from pairfactory.pairs.curation import CuratedDataset


def _write_table(frame: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pandas(
        frame.reindex(columns=schema.names), schema=schema, preserve_index=False
    )
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_pair_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write one pair table with the pair schema (the counterpart of ``read_pair_table``),
    atomically."""
    path = Path(path)
    _write_table(frame, S.PAIR_SCHEMA, path)
    return path


def write_curated(curated: CuratedDataset, out_dir: str | Path) -> list[Path]:
    """Write one dataset's tables, rejects and summaries under ``out_dir/dataset``; return the
    paths."""
    folder = Path(out_dir) / curated.dataset
    written: list[Path] = []
    for target, table in curated.tables.items():
        path = folder / f"{target}.parquet"
        _write_table(table, S.PAIR_SCHEMA, path)
        written.append(path)
    path = folder / "rejects.parquet"
    _write_table(curated.rejects, S.REJECT_SCHEMA, path)
    written.append(path)
    path = folder / "summary.json"
    atomic_write_text(path, json.dumps(curated.summary, indent=2, sort_keys=False) + "\n")
    written.append(path)
    path = folder / "summary.md"
    atomic_write_text(path, summary_markdown(curated.summary))
    written.append(path)
    return written


def summary_table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per target: dataset, target, in, kept, rejected, reasons, flags."""
    rows = []
    for target, counts in summary["targets"].items():
        reasons = (
            ", ".join(f"{reason} {n}" for reason, n in counts["rejected_by_reason"].items()) or "-"
        )
        flags = (
            f"duplicate {counts['duplicate_pair_rows']}, solid-state {counts['solid_state_rows']}, "
            f"override {counts['smiles_override_rows']}"
        )
        rows.append(
            [
                summary["dataset"],
                target,
                str(counts["rows_in"]),
                str(counts["kept"]),
                str(counts["rejected"]),
                reasons,
                flags,
            ]
        )
    return rows


SUMMARY_HEADER = [
    "dataset",
    "target",
    "in",
    "kept",
    "rejected",
    "rejected by reason",
    "kept rows flagged",
]


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Curated pairs: `{summary['dataset']}`",
        "",
        f"Input: `{summary['input']['path']}` ({summary['input']['rows']} rows, sha256 "
        f"`{summary['input']['sha256']}`)",
        f"Settings: `{json.dumps(summary['settings'], sort_keys=True)}`",
        f"Rows rejected for every target: {summary['rows_rejected_for_every_target']}",
        "",
        "| " + " | ".join(SUMMARY_HEADER) + " |",
        "|" + "|".join("---" for _ in SUMMARY_HEADER) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in summary_table_rows(summary)]
    lines += ["", "In = kept + rejected holds for every target (checked when curating)."]
    for target, counts in summary["targets"].items():
        lines += [
            "",
            f"## `{target}` ({counts['unit']})",
            f"- unique solutes {counts['unique_solutes']}, solvents {counts['unique_solvents']}, "
            f"pairs {counts['unique_pairs']}",
            f"- value range {counts['value_min']} … {counts['value_max']}, mean "
            f"{counts['value_mean']}",
        ]
    return "\n".join(lines) + "\n"


def _read_checked(path: str | Path, schema: pa.Schema, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(
            path, f"{what} not found (run `pairfactory pairs` first, or check the path)"
        )
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputFileError(path, f"is not a readable Parquet file: {err}") from err
    missing = [name for name in schema.names if name not in table.schema.names]
    if missing:
        raise InputFileError(
            path,
            f"is not a {what}: missing columns {missing} (re-create it with `pairfactory pairs`)",
        )
    for field in schema:
        actual = table.schema.field(field.name).type
        if actual != field.type:
            raise InputFileError(
                path, f"column {field.name!r} has type {actual}, expected {field.type}"
            )
        if not field.nullable and table.column(field.name).null_count:
            raise InputFileError(path, f"column {field.name!r} has null values; it must not")
    return table.select(schema.names).to_pandas()


def read_pair_table(path: str | Path) -> pd.DataFrame:
    """Read one ``{target}.parquet`` pair table, validating its columns, types and pair ids."""
    frame = _read_checked(path, S.PAIR_SCHEMA, "pair table")
    bad = ~frame[S.PAIR_ID].str.fullmatch(S.PAIR_ID_PATTERN.pattern)
    if bad.any():
        raise InputFileError(path, f"{int(bad.sum())} pair_id value(s) are not 16 hex characters")
    if frame[S.PAIR_ID].duplicated().any():
        raise InputFileError(path, "pair_id values are not unique")
    return frame


def read_rejects(path: str | Path) -> pd.DataFrame:
    """Read a ``rejects.parquet`` table, validating its columns and types."""
    return _read_checked(path, S.REJECT_SCHEMA, "reject table")
