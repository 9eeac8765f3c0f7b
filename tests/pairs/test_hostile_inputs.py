"""Hostile raw files in tmp dirs: row problems are rejections, file problems clear
InputFileErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairfactory.errors import InputFileError, UserError
from pairfactory.pairs import curate
from pairfactory.pairs import schema as S
from pairfactory.pairs.curation import rejects_for_target

MNSOL_HEADER = "Solute;Solvent;SoluteSMILES;SolventSMILES;DeltaGsolv"
CHROMOPHORE_HEADER = (
    "Tag,Chromophore,Solvent,Absorption max (nm),Emission max (nm),Lifetime (ns),Reference"
)
COMBISOLV_HEADER = "smiles_solvent,smiles_solute,dGsolv_avg,Source_all"


def _write(path: Path, text: str, *, bom: bool = False, crlf: bool = False) -> Path:
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes(("\ufeff" if bom else "").encode("utf-8") + text.encode("utf-8"))
    return path


def _reasons(curated, target: str) -> dict[int, str]:
    rejected = rejects_for_target(curated.rejects, target)
    return dict(zip(rejected[S.SOURCE_ROW], rejected[S.REASON]))


def test_mnsol_bad_rows_are_rejections(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mnsol.csv",
        MNSOL_HEADER
        + "\n".join(
            [
                "",
                "toluene;water;Cc1ccccc1;O;-0.89",
                "junk;water;C1CC(;O;-1.0",  # garbage SMILES
                "empty;water;;O;-1.0",  # empty SMILES cell
                "ethanol;water;CCO;O;",  # empty value
                "ethanol;water;CCO;O;about -5",  # text in the numeric column
                "acetate;water;CC(=O)[O-];O;-77",  # charged
                "methyl;water;[CH3];O;-1",  # radical
                "toluene;water;Cc1ccccc1;O;-0.90",  # a repeat of row 0
                "ethanol;water;CCO;O;inf",
            ]
        )
        + "\n",
    )
    curated = curate("mnsol", path)
    table = curated.tables["dg_solv_kcal_mol"]
    assert list(table[S.SOURCE_ROW]) == [0, 7] and table[S.DUPLICATE_PAIR].all()
    assert _reasons(curated, "dg_solv_kcal_mol") == {
        1: S.INVALID_SMILES,
        2: S.MISSING_SMILES,
        3: S.MISSING_VALUE,
        4: S.NON_NUMERIC_VALUE,
        5: S.CHARGED,
        6: S.RADICAL,
        8: S.NON_FINITE_VALUE,
    }
    detail = curated.rejects.set_index(S.SOURCE_ROW)[S.DETAIL]
    assert "C1CC(" in detail[1] and "about -5" in detail[4]
    assert curated.rejects.set_index(S.SOURCE_ROW)[S.VALUE_RAW][4] == "about -5"


def test_chromophore_bom_crlf_and_per_target_rules(tmp_path: Path) -> None:
    rows = [
        "1,CCO,O,300,NaN,2.0,doi1",
        "2,c1ccccc1,gas,250,280,NaN,doi2",
        "3,c1ccccc1,c1ccccc1,255,NaN,1.0,doi3",  # solid state
        "4,CCN,O,,NaN,-1.0,doi4",  # empty absorption, negative lifetime
        "5,CCN,O,nm?,300,0,doi5",  # text value, zero lifetime
        "6,C(,O,300,300,1,doi6",  # bad chromophore SMILES
    ]
    path = _write(
        tmp_path / "chromo.csv",
        CHROMOPHORE_HEADER + "\n" + "\n".join(rows) + "\n",
        bom=True,
        crlf=True,
    )
    curated = curate("chromophore", path)
    absorption = curated.tables["absorption_max_nm"]
    assert list(absorption[S.SOURCE_ROW]) == [0, 2]
    assert list(absorption[S.SOLID_STATE]) == [False, True]
    assert _reasons(curated, "absorption_max_nm") == {
        1: S.GAS_PHASE_SOLVENT,
        3: S.MISSING_VALUE,
        4: S.NON_NUMERIC_VALUE,
        5: S.INVALID_SMILES,
    }
    assert _reasons(curated, "ln_lifetime_ns") == {
        1: S.GAS_PHASE_SOLVENT,
        3: S.NON_POSITIVE_LIFETIME,
        4: S.NON_POSITIVE_LIFETIME,
        5: S.INVALID_SMILES,
    }
    assert curated.tables["emission_max_nm"][S.SOURCE_ROW].tolist() == [4]
    assert absorption[S.SOURCE_TAGS].tolist() == ["doi1", "doi3"]  # no stray '\r' from CRLF
    excluded = curate("chromophore", path, exclude_solid_state=True)
    assert _reasons(excluded, "absorption_max_nm")[2] == S.SOLID_STATE_EXCLUDED


@pytest.mark.parametrize(
    ("dataset", "text", "problem"),
    [
        ("mnsol", "", "file is empty"),
        ("mnsol", "\n\n  \n", "file is empty"),
        ("mnsol", MNSOL_HEADER + "\n", "no data rows"),
        (
            "mnsol",
            MNSOL_HEADER.replace(";", ",") + "\ntoluene,water,Cc1ccccc1,O,-0.89\n",
            "wrong delimiter",
        ),
        (
            "mnsol",
            "Solute;Solvent;SoluteSMILES;SolventSMILES\ntoluene;water;Cc1ccccc1;O\n",
            "missing required column",
        ),
        (
            "mnsol",
            MNSOL_HEADER + "\ntoluene;water;Cc1ccccc1;O;-0.89;extra;fields\n",
            "malformed table",
        ),
        ("combisolv", "smiles_solvent,smiles_solute\nO,CCO\n", "dGsolv_avg"),
        (
            "chromophore",
            CHROMOPHORE_HEADER.replace(",", ";") + "\n1;CCO;O;1;2;3;x\n",
            "wrong delimiter",
        ),
        ("freesolv", "# header only\n# nothing else\n", "no data lines"),
        ("freesolv", "# c\nmobley_1, CCO, ethanol, -5.0\n", "line 2 has 1 field"),
    ],
)
def test_file_problems_raise_input_file_error(
    tmp_path: Path, dataset: str, text: str, problem: str
) -> None:
    path = _write(tmp_path / "input.txt", text)
    with pytest.raises(InputFileError, match=problem) as info:
        curate(dataset, path)
    assert str(path) in str(info.value)


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(InputFileError, match="not UTF-8"):
        curate("mnsol", binary)
    with pytest.raises(UserError, match="--mnsol-csv"):
        curate("mnsol", tmp_path / "absent.csv")
    with pytest.raises(UserError, match="--combisolv-csv"):
        curate("combisolv")  # not bundled, no data dir: say which flag to set
    with pytest.raises(UserError, match="unknown dataset"):
        curate("qm9")


def test_freesolv_lines_with_trailing_spaces_and_text_values(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "database.txt",
        "#v0.52\n#fields\n"
        "mobley_1; CCO; ethanol; -5.00; 0.6; -4.0; 0.03; ref; ref; note  \n"
        "\n"
        "mobley_2; CCN; ethylamine; n/a; 0.6; -4.0; 0.03; ref; ref; note\n"
        "mobley_3; C1C; broken; -1.0; 0.6; -4.0; 0.03; ref; ref; note; with; semicolons\n",
        crlf=True,
    )
    curated = curate("freesolv", path)
    assert curated.tables["dg_hydration_kcal_mol"][S.VALUE].tolist() == [-5.0]
    assert _reasons(curated, "dg_hydration_kcal_mol") == {1: S.MISSING_VALUE, 2: S.INVALID_SMILES}


def test_combisolv_subset_and_unit_in_header(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "combi.csv",
        "smiles_solvent,smiles_solute,dGsolv_avg [kcal/mol],Source_all\n"
        "O,CCO,-5.0,\"['FreeSolv (entry number=1)']\"\n"
        "CCO,CCO,-4.0,\"['CompSol Binary (entry number=2)']\"\n"
        "O,CCCO,-4.8,\"['FreeSolv (entry number=3)', 'Abraham Paper (A6)']\"\n",
    )
    combisolv = curate("combisolv", path)
    assert len(combisolv.tables["dg_solv_kcal_mol"]) == 3
    subset = curate("freesolv_cgib", path)
    table = subset.tables["dg_hydration_kcal_mol"]
    assert table[S.SOURCE_ROW].tolist() == [0, 2]  # rows of the full file, traceable
    assert subset.summary["input"]["rows"] == 2 and subset.summary["settings"] == {
        "source_filter": "FreeSolv"
    }
