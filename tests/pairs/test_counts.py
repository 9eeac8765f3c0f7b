"""Exact counts and rules on the real dataset files (docs/curation.md)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pairfactory.pairs import DATASETS, CuratedDataset, curate
from pairfactory.pairs import schema as S
from pairfactory.pairs.curation import rejects_for_target


def _check_reconciles(curated: CuratedDataset) -> None:
    rows_in = curated.summary["input"]["rows"]
    for target, table in curated.tables.items():
        rejected = rejects_for_target(curated.rejects, target)
        assert len(table) + len(rejected) == rows_in
        assert set(table[S.SOURCE_ROW]).isdisjoint(rejected[S.SOURCE_ROW])
        counts = curated.summary["targets"][target]
        assert counts["kept"] == len(table) and counts["rejected"] == len(rejected)
        assert sum(counts["rejected_by_reason"].values()) == counts["rejected"]


def test_registry_lists_the_architecture_datasets() -> None:
    assert set(DATASETS) == {"chromophore", "freesolv", "freesolv_cgib", "mnsol", "combisolv"}
    assert DATASETS["chromophore"].target_names == (
        "absorption_max_nm",
        "emission_max_nm",
        "ln_lifetime_ns",
    )
    assert DATASETS["chromophore"].unit_of("ln_lifetime_ns") == "ln(ns)"
    assert DATASETS["mnsol"].cli_flag == "--mnsol-csv"


def test_chromophore_cgib_counts(chromophore_curated: CuratedDataset) -> None:
    tables = chromophore_curated.tables
    assert {t: len(df) for t, df in tables.items()} == {
        "absorption_max_nm": 17276,
        "emission_max_nm": 18141,
        "ln_lifetime_ns": 6960,
    }
    rejects = chromophore_curated.rejects
    gas = rejects[rejects[S.REASON] == S.GAS_PHASE_SOLVENT]
    assert len(gas) == 19 and gas[S.TARGET].isna().all() and (gas[S.SOLVENT_RAW] == "gas").all()
    missing = rejects[rejects[S.REASON] == S.MISSING_VALUE].groupby(S.TARGET).size().to_dict()
    # NaN counts from SOURCE.md: 20236 - 17295 / 18142 / 6960, less the gas rows rejected first
    assert missing == {"absorption_max_nm": 2941, "emission_max_nm": 2076, "ln_lifetime_ns": 13257}
    _check_reconciles(chromophore_curated)


def test_chromophore_flags_and_log_lifetime(
    chromophore_curated: CuratedDataset, chromophore_csv
) -> None:
    raw = pd.read_csv(chromophore_csv, encoding="utf-8-sig")
    solid_rows = set(raw.index[raw["Chromophore"] == raw["Solvent"]])
    assert len(solid_rows) == 956
    flagged: set[int] = set()
    for table in chromophore_curated.tables.values():
        flagged |= set(table.loc[table[S.SOLID_STATE], S.SOURCE_ROW])
        assert (
            table.loc[table[S.SOLID_STATE], S.SOLUTE_SMILES]
            == table.loc[table[S.SOLID_STATE], S.SOLVENT_SMILES]
        ).all()
    assert flagged <= solid_rows
    # the solid-state rows not kept anywhere have no value for any target (not lost to the flag)
    unkept = chromophore_curated.rejects[
        chromophore_curated.rejects[S.SOURCE_ROW].isin(solid_rows - flagged)
    ]
    assert (unkept[S.REASON] == S.MISSING_VALUE).all()
    assert unkept.groupby(S.SOURCE_ROW).size().eq(3).all() and unkept[
        S.SOURCE_ROW
    ].nunique() == len(solid_rows - flagged)
    life = chromophore_curated.tables["ln_lifetime_ns"].set_index(S.SOURCE_ROW)
    assert life[S.VALUE].loc[0] == pytest.approx(
        math.log(2.804262479)
    )  # row 0: Lifetime 2.804262479 ns
    assert (life[S.UNIT] == "ln(ns)").all()
    # repeated measurements (SOURCE.md: 277/291/128 duplicated pairs) are flagged, all members, not
    # dropped
    for target, extra in {
        "absorption_max_nm": 277,
        "emission_max_nm": 291,
        "ln_lifetime_ns": 128,
    }.items():
        table = chromophore_curated.tables[target]
        dup = table[table[S.DUPLICATE_PAIR]]
        assert len(dup) - len(dup.drop_duplicates([S.SOLUTE_SMILES, S.SOLVENT_SMILES])) == extra
        assert dup.groupby([S.SOLUTE_SMILES, S.SOLVENT_SMILES]).size().min() >= 2


def test_chromophore_exclude_solid_state(chromophore_csv) -> None:
    curated = curate("chromophore", chromophore_csv, exclude_solid_state=True)
    excluded = curated.rejects[curated.rejects[S.REASON] == S.SOLID_STATE_EXCLUDED]
    assert len(excluded) == 956 and excluded[S.TARGET].isna().all()
    for table in curated.tables.values():
        assert not table[S.SOLID_STATE].any()
    assert len(curated.tables["absorption_max_nm"]) == 17276 - 366
    assert curated.summary["settings"] == {"exclude_solid_state": True}
    _check_reconciles(curated)


def test_freesolv_642_in_water(freesolv_curated: CuratedDataset) -> None:
    table = freesolv_curated.tables["dg_hydration_kcal_mol"]
    assert len(table) == 642 and freesolv_curated.rejects.empty
    assert (table[S.SOLVENT_SMILES] == "O").all() and (table[S.UNIT] == "kcal/mol").all()
    row = table.set_index(S.SOURCE_TAGS).loc[
        "mobley_1017962"
    ]  # first line: methyl hexanoate, -2.49
    assert row[S.VALUE] == -2.49 and row[S.SOLUTE_NAME] == "methyl hexanoate"
    _check_reconciles(freesolv_curated)


def test_freesolv_cgib_560(freesolv_cgib_curated: CuratedDataset) -> None:
    table = freesolv_cgib_curated.tables["dg_hydration_kcal_mol"]
    assert len(table) == 560
    assert (table[S.SOLVENT_SMILES] == "O").all()
    assert table[S.SOURCE_TAGS].str.contains("FreeSolv").all()
    _check_reconciles(freesolv_cgib_curated)


def test_combisolv_8780_with_source_tags(combisolv_curated: CuratedDataset, combisolv_csv) -> None:
    table = combisolv_curated.tables["dg_solv_kcal_mol"]
    assert len(table) == 8780 and not table[S.DUPLICATE_PAIR].any()
    raw = pd.read_csv(combisolv_csv)
    assert list(table[S.SOURCE_TAGS]) == list(raw["Source_all"])
    assert list(table[S.VALUE]) == list(raw["dGsolv_avg"])
    _check_reconciles(combisolv_curated)


def test_mnsol_counts(mnsol_curated: CuratedDataset) -> None:
    table = mnsol_curated.tables["dg_solv_kcal_mol"]
    rejects = mnsol_curated.rejects
    assert len(table) + len(rejects) == 2530
    assert dict(rejects[S.REASON].value_counts()) == {
        S.INCONSISTENT_SOURCE_ENTRY: 1,
        S.MULTI_FRAGMENT: 1,
    }
    assert set(rejects[S.SOURCE_ROW]) == {2091, 2351}  # n-undecane, waterdimer
    _check_reconciles(mnsol_curated)


def test_pair_ids_unique_and_hex(
    chromophore_curated: CuratedDataset,
    mnsol_curated: CuratedDataset,
    freesolv_curated: CuratedDataset,
) -> None:
    ids = pd.concat(
        [
            t[S.PAIR_ID]
            for c in (chromophore_curated, mnsol_curated, freesolv_curated)
            for t in c.tables.values()
        ]
    )
    assert ids.str.fullmatch(r"[0-9a-f]{16}").all()
    assert not ids.duplicated().any()
