"""The MNSol override table: applied, verified against MNSol formulas, and no bad molecule kept."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pairfactory.errors import InputFileError
from pairfactory.pairs import CuratedDataset, curate
from pairfactory.pairs import schema as S
from pairfactory.pairs.overrides import DEFAULT_OVERRIDES_PATH, load_overrides
from pairfactory.pairs.smiles import canonicalize, parse_hill_formula, parse_mnsol_formula

TARGET = "dg_solv_kcal_mol"


def _rows(curated: CuratedDataset, column: str, name: str) -> pd.DataFrame:
    table = curated.tables[TARGET]
    return table[table[column] == name]


def test_solvent_isomers_fixed(mnsol_curated: CuratedDataset) -> None:
    expected = {
        "dichloroethane": ("ClCCCl", 39),
        "dibromoethane": ("BrCCBr", 10),
        "dimethylpyridine": ("Cc1cccc(C)n1", 6),
        "trimethylbenzene": ("Cc1ccc(C)c(C)c1", 11),
    }
    for name, (smiles, n_rows) in expected.items():
        rows = _rows(mnsol_curated, S.SOLVENT_NAME, name)
        assert len(rows) == n_rows, name
        assert set(rows[S.SOLVENT_SMILES]) == {canonicalize(smiles).canonical}, name
        assert rows[S.SMILES_OVERRIDE].all()


def test_xylene_decision_accepted_and_flagged(mnsol_curated: CuratedDataset) -> None:
    rows = _rows(mnsol_curated, S.SOLVENT_NAME, "xylene")
    assert len(rows) == 48
    assert set(rows[S.SOLVENT_SMILES]) == {"Cc1ccccc1C"} and rows[S.SMILES_OVERRIDE].all()


def test_solute_fixes(mnsol_curated: CuratedDataset) -> None:
    sulfolane = _rows(mnsol_curated, S.SOLUTE_NAME, "sulfolane")
    assert set(sulfolane[S.SOLUTE_SMILES]) == {"O=S1(=O)CCCC1"} and len(sulfolane) == 2
    assert set(_rows(mnsol_curated, S.SOLUTE_NAME, "chlorotoluene")[S.SOLUTE_SMILES]) == {
        "ClCc1ccccc1"
    }
    assert set(_rows(mnsol_curated, S.SOLUTE_NAME, "hydrogen")[S.SOLUTE_SMILES]) == {"[H][H]"}
    table = mnsol_curated.tables[TARGET]
    # rows untouched by the table keep the file's SMILES and no flag
    octane = table[(table[S.SOLUTE_NAME] == "n-octane") & (table[S.SOLVENT_NAME] == "water")]
    assert list(octane[S.SOLUTE_SMILES]) == ["CCCCCCCC"] and not octane[S.SMILES_OVERRIDE].any()


def test_no_charged_radical_or_multifragment_kept(mnsol_curated: CuratedDataset) -> None:
    table = mnsol_curated.tables[TARGET]
    for column in (S.SOLUTE_SMILES, S.SOLVENT_SMILES):
        for smiles in table[column].unique():
            result = canonicalize(smiles)
            assert not (result.is_charged or result.is_radical or result.is_multi_fragment), smiles
    # before the overrides the file has all three kinds: the table is what removes them
    raw = pd.read_csv(mnsol_curated.summary["input"]["path"], sep=";")
    problems = {
        canonicalize(s).closed_shell_problem() is not None for s in raw["SoluteSMILES"].unique()
    }
    assert True in problems


def test_override_table_matches_the_file_and_mnsol_formulas(
    mnsol_csv: Path, mnsol_alldata_csv: Path
) -> None:
    overrides = load_overrides()
    raw = pd.read_csv(mnsol_csv, sep=";")
    alldata = pd.read_csv(mnsol_alldata_csv)
    neutral_abs = alldata[(alldata["Charge"] == 0) & (alldata["type"] == "abs")].reset_index(
        drop=True
    )
    assert list(neutral_abs["SoluteName"]) == list(raw["Solute"])  # row-for-row, as SOURCE.md says
    checked_exceptions = []
    for (kind, name), entry in overrides.items():
        column, smiles_column = (
            ("Solute", "SoluteSMILES") if kind == "solute" else ("Solvent", "SolventSMILES")
        )
        rows = raw[raw[column] == name]
        assert len(rows), f"{kind} {name!r} does not occur in mnsol.csv"
        assert set(rows[smiles_column]) == {entry.file_smiles}, name
        assert len(entry.evidence) > 40, name
        if entry.smiles:
            result = canonicalize(entry.smiles)
            assert result.ok and result.closed_shell_problem() is None, name
        if kind != "solute":
            continue
        formulas = set(neutral_abs.loc[rows.index, "Formula"])
        assert formulas == {entry.mnsol_formula}, name
        if entry.action == "reject":
            continue
        rdkit_counts = parse_hill_formula(canonicalize(entry.smiles).formula)
        if entry.formula_check == "match":
            assert rdkit_counts == parse_mnsol_formula(entry.mnsol_formula), name
        else:
            assert entry.formula_check == "exception" and rdkit_counts != parse_mnsol_formula(
                entry.mnsol_formula
            )
            checked_exceptions.append(name)
    assert checked_exceptions == ["methyl3-methyl-4-thiomethoxyphenylthiophosphate"]


def test_every_sourcemd_flagged_solute_is_fixed_or_rejected(
    mnsol_curated: CuratedDataset, mnsol_alldata_csv
) -> None:
    """Independent of the table: every kept solute's RDKit formula equals MNSol's, bar the one
    exception."""
    alldata = pd.read_csv(mnsol_alldata_csv)
    neutral_abs = alldata[(alldata["Charge"] == 0) & (alldata["type"] == "abs")].reset_index(
        drop=True
    )
    table = mnsol_curated.tables[TARGET]
    mismatched = set()
    for name, smiles, row in zip(table[S.SOLUTE_NAME], table[S.SOLUTE_SMILES], table[S.SOURCE_ROW]):
        mnsol = parse_mnsol_formula(neutral_abs.at[row, "Formula"])
        if parse_hill_formula(canonicalize(smiles).formula) != mnsol:
            mismatched.add(name)
    assert mismatched == {"methyl3-methyl-4-thiomethoxyphenylthiophosphate"}


def test_formula_parsers() -> None:
    assert parse_mnsol_formula("H4C3O1F2CL2") == {"H": 4, "C": 3, "O": 1, "F": 2, "Cl": 2}
    assert parse_hill_formula("C3H4Cl2F2O") == {"C": 3, "H": 4, "Cl": 2, "F": 2, "O": 1}
    assert parse_hill_formula("C7H5O2-") == {"C": 7, "H": 5, "O": 2}
    with pytest.raises(ValueError):
        parse_mnsol_formula("C3H")


def test_bad_override_table_is_a_clear_error(tmp_path: Path, mnsol_csv: Path) -> None:
    bad = tmp_path / "overrides.yaml"
    bad.write_text(
        "entries:\n  - kind: solute\n    name: x\n    action: rename\n    evidence: because\n"
    )
    with pytest.raises(InputFileError, match="action must be one of"):
        load_overrides(bad)
    bad.write_text(
        "entries:\n  - kind: solute\n    name: x\n    action: reject\n    evidence: because\n"
    )
    with pytest.raises(InputFileError, match="reject needs a reason"):
        curate("mnsol", mnsol_csv, overrides_path=bad)
    assert DEFAULT_OVERRIDES_PATH.is_file()


def test_without_overrides_the_closed_shell_rules_reject(tmp_path: Path, mnsol_csv: Path) -> None:
    empty = tmp_path / "none.yaml"
    empty.write_text("entries: []\n")
    curated = curate("mnsol", mnsol_csv, overrides_path=empty)
    reasons = curated.rejects.set_index(S.SOURCE_ROW)[S.REASON]
    assert reasons[2351] == S.MULTI_FRAGMENT  # waterdimer O.O
    assert reasons[1807] == S.CHARGED  # sulfolane written with S(2+)
    assert reasons[1229] == S.RADICAL  # [H]
    assert reasons[2378] == S.CHARGED  # diethylpropanedioate as a dianion
    assert len(curated.tables[TARGET]) + len(curated.rejects) == 2530
    # exactly SOURCE.md's charge / radical / fragment rows (a charged radical counts as charged)
    assert dict(curated.rejects[S.REASON].value_counts()) == {
        S.CHARGED: 19,
        S.RADICAL: 3,
        S.MULTI_FRAGMENT: 3,
    }
