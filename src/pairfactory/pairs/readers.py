"""One reader per raw file format; every structural problem is an InputFileError naming file and
fix.

Readers return every cell as a string (``dtype=str``, no NA guessing) so that the curation rules,
not
pandas, decide what an empty cell, ``NaN`` or a stray word in a numeric column means; row problems
are
rejections there, file problems are errors here. BOMs (``utf-8-sig``) and CRLF line ends are
accepted.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pairfactory.errors import InputFileError

log = logging.getLogger(__name__)

_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}

FREESOLV_FIELDS: tuple[str, ...] = (
    "compound_id",
    "smiles",
    "iupac_name",
    "expt_kcal_mol",
    "expt_uncertainty_kcal_mol",
    "calc_kcal_mol",
    "calc_uncertainty_kcal_mol",
    "expt_reference",
    "calc_reference",
    "notes",
)
# id, SMILES, name and the experimental value are what curation needs; later fields are optional.
_FREESOLV_MIN_FIELDS = 4


def _read_text(path: Path, hint: str) -> str:
    if not path.exists():
        raise InputFileError(path, f"file not found ({hint})")
    if not path.is_file():
        raise InputFileError(path, f"is not a regular file ({hint})")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputFileError(
            path, f"is not UTF-8 text ({err}); is this the right file? ({hint})"
        ) from err
    if not text.strip():
        raise InputFileError(path, f"file is empty; expected a header line and data rows ({hint})")
    return text


def read_delimited(
    path: str | Path,
    *,
    sep: str,
    required_columns: Sequence[str],
    hint: str = "check the path",
) -> pd.DataFrame:
    """Read a delimited text table with a header as strings; check delimiter and required columns.

    ``hint`` tells the user how to point at the right file (e.g. the CLI flag), and ends every
    message.
    """
    path = Path(path)
    text = _read_text(path, hint)
    header = text.splitlines()[0]
    header_fields = [field.strip() for field in next(csv.reader([header], delimiter=sep))]
    missing = [column for column in required_columns if column not in header_fields]
    if missing:
        expected = _DELIMITER_NAMES.get(sep, repr(sep))
        for other, name in _DELIMITER_NAMES.items():
            if other == sep:
                continue
            other_fields = [f.strip() for f in next(csv.reader([header], delimiter=other))]
            if all(column in other_fields for column in required_columns):
                raise InputFileError(
                    path,
                    f"wrong delimiter: the header is {name}-separated but this format is "
                    f"{expected}-separated "
                    f"({hint})",
                )
        raise InputFileError(
            path,
            f"missing required column(s) {missing}; the header has {header_fields} "
            f"(expected a {expected}-separated file with columns {list(required_columns)}; {hint})",
        )
    try:
        records = list(csv.reader(io.StringIO(text), delimiter=sep))
    except csv.Error as err:
        raise InputFileError(path, f"malformed table: {err} ({hint})") from err
    width = len(records[0])
    rows: list[list[str]] = []
    for line_number, record in enumerate(records[1:], start=2):
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # blank line: not a data row
        if len(record) != width:
            # pandas would silently turn surplus leading fields into an index and shift every column
            raise InputFileError(
                path,
                f"malformed table: line {line_number} has {len(record)} fields, the header has "
                f"{width} "
                f"(a stray {_DELIMITER_NAMES.get(sep, sep)} or an unquoted field?) ({hint})",
            )
        rows.append(record)
    if not rows:
        raise InputFileError(path, f"has a header but no data rows ({hint})")
    frame = pd.DataFrame(rows, columns=[field.strip() for field in records[0]], dtype=str)
    log.debug("read %s: %d rows, %d columns", path, len(frame), frame.shape[1])
    return frame.reset_index(drop=True)


def read_freesolv(path: str | Path, hint: str = "check the path") -> pd.DataFrame:
    """Read FreeSolv ``database.txt``: ``#`` comment lines, then ``; ``-separated data lines.

    Returns one row per data line (in file order, blank lines skipped) with FREESOLV_FIELDS columns
    (missing optional trailing fields are empty strings). A data line with fewer than the four
    needed
    fields is a file error naming its line number.
    """
    path = Path(path)
    text = _read_text(path, hint)
    rows: list[list[str]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [field.strip() for field in line.split(";")]
        if len(fields) < _FREESOLV_MIN_FIELDS:
            raise InputFileError(
                path,
                f"line {line_number} has {len(fields)} field(s); FreeSolv lines hold "
                f"{len(FREESOLV_FIELDS)} "
                f"fields separated by '; ' (id; SMILES; name; value; ...) ({hint})",
            )
        if len(fields) > len(FREESOLV_FIELDS):
            # the free-text notes may themselves contain ';': keep them together
            fields = fields[: len(FREESOLV_FIELDS) - 1] + [
                "; ".join(fields[len(FREESOLV_FIELDS) - 1 :])
            ]
        rows.append(fields + [""] * (len(FREESOLV_FIELDS) - len(fields)))
    if not rows:
        raise InputFileError(path, f"has no data lines, only comments ({hint})")
    return pd.DataFrame(rows, columns=list(FREESOLV_FIELDS), dtype=str)
