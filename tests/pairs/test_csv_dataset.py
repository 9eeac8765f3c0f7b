"""A user's own CSV dataset: curated by the shared rules (every rejected row with its reason,
in = kept + rejected), unsupported elements rejected, and configuration mistakes named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pairfactory.cli import main
from pairfactory.errors import InputFileError, UserError
from pairfactory.pairs import schema as S
from pairfactory.pairs.csv_dataset import CsvSource, csv_sources, curate_csv
from pairfactory.pairs.registry import DATASETS, all_datasets

ROWS = [
    ("CCO", "O", "-5.0", "410"),
    ("c1ccccc1[Fe]", "O", "-1", "400"),  # iron: no featurizer column, rejected
    ("CC(=O)[O-]", "O", "-3", "390"),  # charged
    ("xx", "O", "1", "380"),  # not a SMILES
    ("CCN", "CCO", "", "370"),  # no value for the first target only
    ("CCCl", "ClCCl", "-2.5", "n/a"),
    ("OCC", "O", "-5.1", "411"),  # the same pair as row 0, spelt differently
]


def _config(path: Path, delimiter: str = ",") -> dict:
    return {
        "csv_datasets": {
            "mine": {
                "path": str(path),
                "solute_column": "solute",
                "solvent_column": "solvent",
                "delimiter": delimiter,
                "targets": [
                    {"column": "dg", "name": "dg_solv_kcal_mol", "unit": "kcal/mol"},
                    {"column": "lam", "name": "absorption_max_nm", "unit": "nm"},
                ],
            }
        }
    }


def _write(path: Path, sep: str = ",") -> Path:
    pd.DataFrame(ROWS, columns=["solute", "solvent", "dg", "lam"]).to_csv(
        path, sep=sep, index=False
    )
    return path


def test_rows_are_kept_or_rejected_with_their_reason(tmp_path: Path) -> None:
    source = csv_sources(_config(_write(tmp_path / "my.csv")))["mine"]
    curated = curate_csv(source)
    dg = curated.tables["dg_solv_kcal_mol"]
    lam = curated.tables["absorption_max_nm"]
    assert dg["solute_smiles"].tolist() == ["CCO", "CCCl", "CCO"]
    assert set(dg["unit"]) == {"kcal/mol"} and set(lam["unit"]) == {"nm"}
    assert lam["solute_smiles"].tolist() == ["CCO", "CCN", "CCO"]
    assert dg["duplicate_pair"].tolist() == [True, False, True]
    reasons = curated.rejects.groupby("target", dropna=False)["reason"].apply(sorted).to_dict()
    row_reasons = sorted(curated.rejects[curated.rejects["target"].isna()]["reason"])
    assert row_reasons == sorted([S.UNSUPPORTED_ELEMENT, S.CHARGED, S.INVALID_SMILES])
    assert reasons["dg_solv_kcal_mol"] == [S.MISSING_VALUE]
    assert reasons["absorption_max_nm"] == [S.MISSING_VALUE]
    iron = curated.rejects[curated.rejects["reason"] == S.UNSUPPORTED_ELEMENT].iloc[0]
    assert "Fe" in iron["detail"] and iron["source_row"] == 1
    for target, table in curated.tables.items():  # in = kept + rejected, per target
        rejected = curated.rejects[
            curated.rejects["target"].isna() | (curated.rejects["target"] == target)
        ]
        assert len(table) + len(rejected) == len(ROWS)


def test_the_cli_curates_it_from_the_config(tmp_path: Path) -> None:
    import yaml

    _write(tmp_path / "my.csv", sep=";")
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"datasets": ["mine"], **_config(tmp_path / "my.csv", ";")})
    )
    out = tmp_path / "pairs"
    argv = ["pairs", "--config", str(tmp_path / "config.yaml"), "--dataset", "mine"]
    assert main([*argv, "--out-dir", str(out)]) == 0
    assert (out / "mine" / "dg_solv_kcal_mol.parquet").is_file()
    assert (out / "mine" / "rejects.parquet").is_file()
    # without the config the name is unknown, and the message says how to declare it
    assert main(["pairs", "--dataset", "mine", "--out-dir", str(out)]) == 2


def test_configuration_mistakes_are_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "my.csv", sep=";")
    with pytest.raises(InputFileError, match="semicolon-separated"):
        curate_csv(csv_sources(_config(path))["mine"])  # told ',' but the file uses ';'
    config = _config(path, ";")
    config["csv_datasets"]["mine"]["targets"][0]["column"] = "dG"
    with pytest.raises(InputFileError, match=r"missing required column\(s\) \['dG'\]"):
        curate_csv(csv_sources(config)["mine"])
    with pytest.raises(UserError, match="name of a built-in dataset"):
        CsvSource.from_config("freesolv", _config(path)["csv_datasets"]["mine"])
    twice = _config(path)["csv_datasets"]["mine"]
    twice["targets"] = [twice["targets"][0]] * 2
    with pytest.raises(UserError, match="repeats a target name"):
        CsvSource.from_config("mine", twice)


def test_the_registry_view_lists_it_beside_the_built_ins(tmp_path: Path) -> None:
    specs = all_datasets(_config(tmp_path / "my.csv"))
    assert list(specs)[: len(DATASETS)] == list(DATASETS)
    assert specs["mine"].target_names == ("dg_solv_kcal_mol", "absorption_max_nm")
    assert specs["mine"].unit_of("absorption_max_nm") == "nm"
    assert all_datasets({}) == DATASETS
