"""The DATASETS registry: dataset name -> targets, units, input file, CLI flag and config key.

Also resolves where a dataset's raw file is: an explicit path, else ``<data-dir>/<relative path>``,
else the copy bundled in the repository (Chromophore and FreeSolv only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairfactory import units
from pairfactory.errors import UserError

# src/pairfactory/pairs/registry.py -> repository root
REPO_ROOT = Path(__file__).resolve().parents[3]
BUNDLED_DATA_DIR = REPO_ROOT / "data"


@dataclass(frozen=True)
class TargetSpec:
    name: str
    unit: str
    description: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    targets: tuple[TargetSpec, ...]
    input_key: str  # key of the input path (config ``data.<key>``, CLI ``--<key with dashes>``)
    relative_path: str  # where the file sits in a folder laid out like the shared data folder
    bundled: bool  # True when the repository ships the file under data/
    description: str
    # the dataset whose QM samples this one's systems share (its molecules are that dataset's, and
    # samples match pairs by system id): a model learning from samples reads that dataset's shards
    samples_of: str | None = None

    @property
    def cli_flag(self) -> str:
        return "--" + self.input_key.replace("_", "-")

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.targets)

    def unit_of(self, target: str) -> str:
        for spec in self.targets:
            if spec.name == target:
                return spec.unit
        raise KeyError(f"{self.name} has no target {target!r}; targets: {list(self.target_names)}")


_CHROMOPHORE_FILE = "chromophore/DB_for_chromophore_Sci_Data_rev02.csv"
_FREESOLV_FILE = "freesolv/database.txt"
_MNSOL_FILE = "mnsol/mnsol.csv"
_COMBISOLV_FILE = "combisolv_exp/CombiSolv-Exp-8780.csv"

_DG_HYDRATION = TargetSpec(
    "dg_hydration_kcal_mol", units.UNIT_KCAL_PER_MOL, "hydration free energy (gas -> water)"
)
_DG_SOLV = TargetSpec(
    "dg_solv_kcal_mol", units.UNIT_KCAL_PER_MOL, "solvation free energy (gas -> solvent, 298 K)"
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="chromophore",
            targets=(
                TargetSpec("absorption_max_nm", units.UNIT_NM, "first absorption maximum"),
                TargetSpec("emission_max_nm", units.UNIT_NM, "emission maximum"),
                TargetSpec(
                    "ln_lifetime_ns",
                    units.UNIT_LN_NS,
                    "natural log of the fluorescence lifetime in ns",
                ),
            ),
            input_key="chromophore_csv",
            relative_path=_CHROMOPHORE_FILE,
            bundled=True,
            description="Joung et al. 2020 chromophore database (bundled)",
        ),
        DatasetSpec(
            name="freesolv",
            targets=(_DG_HYDRATION,),
            input_key="freesolv_txt",
            relative_path=_FREESOLV_FILE,
            bundled=True,
            description="FreeSolv v0.52, 642 hydration free energies (bundled)",
        ),
        DatasetSpec(
            name="freesolv_cgib",
            targets=(_DG_HYDRATION,),
            input_key="combisolv_csv",
            relative_path=_COMBISOLV_FILE,
            bundled=False,
            description="CombiSolv-Exp rows tagged FreeSolv in Source_all (CGIB's FreeSolv, 560)",
            samples_of="freesolv",
        ),
        DatasetSpec(
            name="mnsol",
            targets=(_DG_SOLV,),
            input_key="mnsol_csv",
            relative_path=_MNSOL_FILE,
            bundled=False,
            description=(
                "MNSol v2012 neutral absolute subset with SMILES (mnsol.csv), curated overrides"
            ),
        ),
        DatasetSpec(
            name="combisolv",
            targets=(_DG_SOLV,),
            input_key="combisolv_csv",
            relative_path=_COMBISOLV_FILE,
            bundled=False,
            description="CombiSolv-Exp-8780 (Vermeire & Green 2021)",
        ),
    )
}


def all_datasets(config: Mapping[str, Any] | None = None) -> dict[str, DatasetSpec]:
    """The built-in datasets and the config's ``csv_datasets``: what wildcards, config checks and
    the pairs stage accept as dataset names."""
    if not config or not config.get("csv_datasets"):
        return dict(DATASETS)
    from pairfactory.pairs.csv_dataset import csv_sources

    return {**DATASETS, **{name: src.spec for name, src in csv_sources(config).items()}}


def samples_dataset(dataset: str) -> str:
    """The dataset whose shards hold ``dataset``'s samples: its ``samples_of``, else itself (a
    dataset outside the registry, e.g. a config's CSV dataset, is its own)."""
    spec = DATASETS.get(dataset)
    return spec.samples_of if spec is not None and spec.samples_of else dataset


def get_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}") from None


def default_input_path(dataset: str, data_dir: str | Path | None = None) -> Path | None:
    """Where ``dataset``'s file is by default: under ``data_dir`` if given, else bundled, else
    None."""
    spec = get_spec(dataset)
    if data_dir is not None:
        return Path(data_dir) / spec.relative_path
    if spec.bundled:
        return BUNDLED_DATA_DIR / spec.relative_path
    return None


def resolve_input_path(
    dataset: str, explicit: str | Path | None = None, data_dir: str | Path | None = None
) -> Path:
    """The input file of ``dataset``; a clear UserError naming the flag to set when there is
    none."""
    spec = get_spec(dataset)
    path = Path(explicit) if explicit is not None else default_input_path(dataset, data_dir)
    if path is None:
        raise UserError(
            f"dataset {dataset!r} needs {spec.relative_path.split('/')[-1]}, which is not bundled: "
            f"pass {spec.cli_flag} PATH or --data-dir DIR (a folder holding {spec.relative_path}), "
            f"or set data.{spec.input_key} in config.yaml"
        )
    if not path.is_file():
        raise UserError(
            f"dataset {dataset!r}: input file {path} does not exist; pass {spec.cli_flag} PATH "
            f"(or --data-dir DIR holding {spec.relative_path})"
        )
    return path
