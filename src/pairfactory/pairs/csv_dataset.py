"""A user's own dataset (config ``csv_datasets``): a CSV of solute and solvent SMILES with one or
more target columns, curated by the same rules as the built-in datasets.

    csv_datasets:
      my_dyes:
        path: data/my_dyes.csv
        solute_column: chromophore
        solvent_column: solvent
        delimiter: ","              # optional
        targets:
          - {column: lambda_abs, name: absorption_max_nm, unit: nm}

Rows are judged like every dataset's (``pairfactory.pairs.curation``): unparsable SMILES, empty or
non-numeric values, charged, radical or multi-fragment molecules (the QM stage computes neutral
closed-shell complexes) and unsupported elements are rejected with their reason; in = kept +
rejected. Settings are parsed once, here, into ``CsvSource`` and a ``DatasetSpec``, so the rest of
the pipeline sees a user's dataset exactly as a built-in one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pairfactory.errors import UserError
from pairfactory.pairs import curation as C
from pairfactory.pairs import schema as S
from pairfactory.pairs.registry import DATASETS, DatasetSpec, TargetSpec


@dataclass(frozen=True)
class CsvTarget:
    column: str
    name: str
    unit: str


@dataclass(frozen=True)
class CsvSource:
    """One ``csv_datasets`` entry, parsed."""

    name: str
    path: Path
    solute_column: str
    solvent_column: str
    targets: tuple[CsvTarget, ...]
    delimiter: str = ","
    description: str = ""

    @classmethod
    def from_config(cls, name: str, entry: Mapping[str, Any]) -> CsvSource:
        if name in DATASETS:
            raise UserError(
                f"config: csv_datasets.{name} has the name of a built-in dataset; rename it"
            )
        targets = tuple(
            CsvTarget(str(t["column"]), str(t["name"]), str(t["unit"])) for t in entry["targets"]
        )
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise UserError(f"config: csv_datasets.{name}.targets repeats a target name: {names}")
        return cls(
            name=name,
            path=Path(entry["path"]),
            solute_column=str(entry["solute_column"]),
            solvent_column=str(entry["solvent_column"]),
            targets=targets,
            delimiter=str(entry.get("delimiter", ",")),
            description=str(entry.get("description", "")),
        )

    @property
    def spec(self) -> DatasetSpec:
        """The registry view of this dataset (targets and units)."""
        return DatasetSpec(
            name=self.name,
            targets=tuple(TargetSpec(t.name, t.unit, f"column {t.column!r}") for t in self.targets),
            input_key=f"csv_datasets.{self.name}.path",
            relative_path=str(self.path),
            bundled=False,
            description=self.description or f"your CSV {self.path}",
        )

    @property
    def hint(self) -> str:
        return f"check csv_datasets.{self.name} in the config"


def csv_sources(config: Mapping[str, Any]) -> dict[str, CsvSource]:
    """Every ``csv_datasets`` entry of a validated config."""
    return {
        name: CsvSource.from_config(name, entry)
        for name, entry in (config.get("csv_datasets") or {}).items()
    }


def read_raw(source: CsvSource) -> C.RawPairs:
    columns = [source.solute_column, source.solvent_column] + [t.column for t in source.targets]
    from pairfactory.pairs.readers import read_delimited

    raw = read_delimited(
        source.path,
        sep=source.delimiter,
        required_columns=list(dict.fromkeys(columns)),
        hint=source.hint,
    )
    frame = pd.DataFrame(
        {
            S.SOURCE_ROW: range(len(raw)),
            S.SOLUTE_RAW: raw[source.solute_column],
            S.SOLVENT_RAW: raw[source.solvent_column],
            C.SOLUTE_INPUT: raw[source.solute_column],
            C.SOLVENT_INPUT: raw[source.solvent_column],
            S.SMILES_OVERRIDE: False,
            S.SOLUTE_NAME: None,
            S.SOLVENT_NAME: None,
            S.SOURCE_TAGS: None,
            C.PRESET_REASON: "",
            C.PRESET_DETAIL: "",
        }
    )
    for target in source.targets:
        frame[f"raw:{target.name}"] = raw[target.column]
    return C.RawPairs(
        dataset=source.name,
        source=source.path,
        frame=frame,
        targets=[C.TargetColumn(t.name, t.unit, f"raw:{t.name}") for t in source.targets],
        closed_shell_only=True,
    )


def curate_csv(source: CsvSource) -> C.CuratedDataset:
    """Curate a user's CSV into one pair table per target, rejects and a summary."""
    return C.build_curated(read_raw(source))
