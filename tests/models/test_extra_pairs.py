"""Extra training pairs: which rows of another table a fold may train on, and that they reach the
training role only (real curated FreeSolv rows, relabelled as a second table)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("dgl")

from curated_tables import freesolv_rows, write_pair_table  # noqa: E402

from pairfactory.cli import main  # noqa: E402
from pairfactory.errors import UserError  # noqa: E402
from pairfactory.ml.extra_pairs import (  # noqa: E402
    DUPLICATE_EXTRA_PAIR,
    DUPLICATE_TRAINING_PAIR,
    HELD_OUT_PAIR,
    HELD_OUT_SCAFFOLD,
    HELD_OUT_SOLUTE,
    OTHER_SOLVENT,
    USED,
    ExtraPairSettings,
    select_extra_training,
    with_extra_training,
)
from pairfactory.ml.model_dir import HOLDOUT_FILE  # noqa: E402
from pairfactory.ml.splits import FoldSplit  # noqa: E402

TARGET = "dg_hydration_kcal_mol"


def _extra_table(main_rows: pd.DataFrame) -> pd.DataFrame:
    """A second table: 20 water pairs the main table lacks, the main table's first 10 water pairs
    again (other labels), the first solute in octanol, a stereo-free spelling of a held-out
    solute and one pair in heavy water."""
    fresh = freesolv_rows(60).iloc[40:60]
    again = main_rows.iloc[:10].assign(value=lambda f: f["value"] + 0.3)
    octanol = main_rows.iloc[[0]].assign(solvent_smiles="CCCCCCCCO")
    heavy = fresh.iloc[[0]].assign(solvent_smiles="[2H]O[2H]")
    frame = pd.concat([fresh, again, octanol, heavy], ignore_index=True)
    frame["dataset"] = "combisolv"
    frame["target"] = "dg_solv_kcal_mol"
    frame["pair_id"] = [f"{0xE0000 + i:016x}" for i in range(len(frame))]
    return frame


@pytest.fixture()
def tables(tmp_path: Path) -> tuple[Path, Path]:
    import torch

    torch.set_num_threads(1)
    main_rows = freesolv_rows(30)
    main_path = write_pair_table(main_rows, tmp_path / "pairs" / "freesolv" / f"{TARGET}.parquet")
    extra_path = tmp_path / "pairs" / "combisolv" / "dg_solv_kcal_mol.parquet"
    extra_path.parent.mkdir(parents=True)
    _extra_table(main_rows).to_parquet(extra_path, index=False)
    return main_path, extra_path


def _split(n: int = 30) -> FoldSplit:
    # rows 0-3 valid, 4-7 test, the rest train
    return FoldSplit(0, np.arange(8, n), np.arange(0, 4), np.arange(4, 8))


def test_held_out_molecules_never_join_training_and_every_row_is_accounted_for() -> None:
    main_rows = freesolv_rows(30)
    extra = _extra_table(main_rows)
    chosen = select_extra_training(extra, main_rows, _split(), ExtraPairSettings(Path("x")))
    outcome = chosen.decisions.set_index("pair_id")["outcome"]
    assert len(outcome) == len(extra) == chosen.summary["n_in"]
    assert chosen.summary["n_used"] + sum(chosen.summary["not_used"].values()) == len(extra)
    # the first 8 rows of `again` repeat validation/test pairs, the last 2 training pairs
    assert set(outcome.iloc[20:28]) == {HELD_OUT_SOLUTE}
    assert set(outcome.iloc[28:30]) == {DUPLICATE_TRAINING_PAIR}
    assert outcome.iloc[30] == HELD_OUT_SOLUTE  # a validation solute, in another solvent
    assert outcome.iloc[31] == USED  # heavy water is another solvent than water
    assert set(outcome.iloc[:20]) == {USED}
    held = set(main_rows.iloc[:8]["solute_smiles"])
    assert not held & set(chosen.rows["solute_smiles"])

    # holdout pair: the solute may come back in another solvent, never the pair itself
    pair_level = select_extra_training(
        extra, main_rows, _split(), ExtraPairSettings(Path("x"), holdout="pair")
    ).decisions["outcome"]
    assert set(pair_level.iloc[20:28]) == {HELD_OUT_PAIR}
    assert pair_level.iloc[30] == USED


def test_solvent_filter_and_stereo_blind_holdout() -> None:
    main_rows = freesolv_rows(30)
    # a held-out solute written with stereo marks the main table does not have
    main_rows.loc[4, "solute_smiles"] = "C/C=C/C"
    extra = _extra_table(main_rows)
    extra.loc[0, "solute_smiles"] = "C/C=C\\C"  # the other isomer: the same molecule, stereo-blind
    chosen = select_extra_training(
        extra, main_rows, _split(), ExtraPairSettings(Path("x"), solvents=("O",))
    )
    outcome = chosen.decisions["outcome"]
    assert outcome.iloc[0] == HELD_OUT_SOLUTE
    assert outcome.iloc[30] == OTHER_SOLVENT and outcome.iloc[31] == OTHER_SOLVENT
    assert set(chosen.rows["solvent_smiles"]) == {"O"}
    with pytest.raises(UserError, match="not a SMILES"):
        ExtraPairSettings(Path("x"), solvents=("not a smiles((",))
    with pytest.raises(UserError, match="holdout"):
        ExtraPairSettings(Path("x"), holdout="scaffold")


def test_extra_rows_join_the_training_role_only() -> None:
    main_rows = freesolv_rows(30)
    extra = _extra_table(main_rows).iloc[:5]
    combined, split = with_extra_training(main_rows, _split(), extra)
    assert len(combined) == 35 and set(combined["target"]) == {TARGET}
    assert set(combined.iloc[30:]["dataset"]) == {"combisolv"}
    assert np.array_equal(split.valid, np.arange(0, 4)) and np.array_equal(
        split.test, np.arange(4, 8)
    )
    assert set(range(30, 35)) <= set(split.train) and len(split.train) == 27


def test_a_fold_with_extra_pairs_trains_on_them_and_tests_on_its_own_pairs(tables, tmp_path):
    main_path, extra_path = tables
    common = ["evaluate", "--pairs", str(main_path), "--model", "cigin", "--fold", "1"]
    common += ["--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-progress"]
    common += ["--graph-cache", str(tmp_path / "graphs.pt")]
    plain, extra = tmp_path / "plain", tmp_path / "extra"
    assert main([*common, "--out-dir", str(plain)]) == 0
    argv = [*common, "--out-dir", str(extra), "--extra-pairs", str(extra_path)]
    assert main([*argv, "--extra-solvent", "O"]) == 0

    metrics = json.loads((extra / "metrics.json").read_text())
    summary = metrics["extra_pairs"]
    assert summary["dataset"] == "combisolv" and summary["holdout"] == "solute"
    assert summary["n_in"] == 32 and summary["solvents"] == ["O"]
    assert summary["n_used"] + sum(summary["not_used"].values()) == 32
    from pairfactory.fileio import file_sha256

    assert summary["sha256"] == file_sha256(extra_path)
    before = json.loads((plain / "metrics.json").read_text())
    assert metrics["n_train"] == before["n_train"] + summary["n_used"]
    assert (metrics["n_valid"], metrics["n_test"]) == (before["n_valid"], before["n_test"])

    predictions = pd.read_parquet(extra / "predictions.parquet")
    decisions = pd.read_csv(extra / "extra_pairs.csv")
    used = set(decisions.loc[decisions["outcome"] == USED, "pair_id"])
    assert used and used <= set(predictions.loc[predictions["role"] == "train", "pair_id"])
    held_out = predictions[predictions["role"] != "train"]
    assert not used & set(held_out["pair_id"])
    plain_held_out = pd.read_parquet(plain / "predictions.parquet")
    plain_held_out = plain_held_out[plain_held_out["role"] != "train"]
    assert sorted(held_out["pair_id"]) == sorted(plain_held_out["pair_id"])
    # no extra row's solute is a validation or test solute
    table = pd.read_parquet(main_path).set_index("pair_id")
    extra_table = pd.read_parquet(extra_path).set_index("pair_id")
    assert not set(extra_table.loc[sorted(used), "solute_smiles"]) & set(
        table.loc[held_out["pair_id"], "solute_smiles"]
    )

    from pairfactory.ml.report import collect_metrics

    labels = set(collect_metrics(tmp_path)["model"])
    assert labels == {"cigin", "cigin@extra=combisolv,extra_solvents=O"}


def test_extra_pair_errors(tables, tmp_path, capsys):
    main_path, extra_path = tables
    argv = ["evaluate", "--pairs", str(main_path), "--model", "cigin", "--epochs", "1"]
    argv += ["--out-dir", str(tmp_path / "out"), "--no-progress"]
    assert main([*argv, "--extra-holdout", "pair"]) != 0
    assert "need --extra-pairs" in capsys.readouterr().err
    assert main([*argv, "--extra-pairs", str(tmp_path / "missing.parquet")]) != 0
    assert "extra pair table not found" in capsys.readouterr().err
    other_unit = pd.read_parquet(extra_path).assign(unit="kJ/mol")
    other_unit.to_parquet(tmp_path / "kj.parquet", index=False)
    assert main([*argv, "--extra-pairs", str(tmp_path / "kj.parquet")]) != 0
    assert "same quantity and unit" in capsys.readouterr().err
    assert main([*argv, "--extra-pairs", str(main_path)]) != 0
    assert "shares 30 pair_id" in capsys.readouterr().err


def test_the_config_names_the_extra_table_beside_the_pairs(tables):
    from pairfactory.cli.evaluate import _extra_pair_settings

    main_path, extra_path = tables

    class Args:
        pairs = str(main_path)
        extra_pairs = extra_holdout = extra_solvents = None

    section = {"table": "combisolv/dg_solv_kcal_mol", "holdout": "pair", "solvents": ["O"]}
    settings = _extra_pair_settings(section, Args())
    assert settings == ExtraPairSettings(extra_path, holdout="pair", solvents=("O",))
    assert _extra_pair_settings({}, Args()) is None


def test_a_final_model_trains_on_extra_pairs_but_not_its_holdouts_solutes(tables, tmp_path):
    main_path, extra_path = tables
    out = tmp_path / "model"
    argv = ["train", "--pairs", str(main_path), "--model", "cigin", "--out-dir", str(out)]
    argv += ["--epochs", "2", "--batch-size", "8", "--threads", "1", "--no-progress"]
    argv += ["--graph-cache", str(tmp_path / "graphs.pt"), "--extra-pairs", str(extra_path)]
    assert main(argv) == 0
    card = json.loads((out / "model.json").read_text())
    table = card["training_table"]
    assert table["rows"] == 30
    assert table["pairs_used"] + table["pairs_rejected"] == 30 + table["extra_pairs"]["n_used"]
    summary = table["extra_pairs"]
    assert summary["n_used"] > 0
    assert summary["n_used"] + sum(summary["not_used"].values()) == summary["n_in"] == 32
    # the holdout (early stopping, σ calibration) is the table's own pairs; every extra row of a
    # holdout solute was left out
    holdout = pd.read_parquet(out / HOLDOUT_FILE)
    assert len(holdout) == card["holdout"]["n"] == 3
    pairs = pd.read_parquet(main_path).set_index("pair_id")
    assert set(holdout["pair_id"]) <= set(pairs.index)
    holdout_solutes = set(pairs.loc[holdout["pair_id"], "solute_smiles"])
    extra = pd.read_parquet(extra_path)
    assert (
        summary["not_used"][HELD_OUT_SOLUTE] == extra["solute_smiles"].isin(holdout_solutes).sum()
    )

    # other labels in the extra table: the members train again (no resume from the old ones)
    extra.assign(value=extra["value"] + 5.0).to_parquet(extra_path, index=False)
    assert main(argv) == 0
    again = json.loads((out / "model.json").read_text())["training_table"]["extra_pairs"]
    assert again["sha256"] != summary["sha256"]
    assert not holdout.equals(pd.read_parquet(out / HOLDOUT_FILE))


def test_scaffold_folds_hold_out_scaffolds_and_repeated_extra_rows_count_once() -> None:
    main_rows = freesolv_rows(30)
    main_rows.loc[4, "solute_smiles"] = "Oc1ccccc1"  # a held-out phenol
    extra = _extra_table(main_rows).iloc[:3].copy()
    extra.loc[0, "solute_smiles"] = "Cc1ccccc1"  # toluene: phenol's (benzene) scaffold
    extra.loc[1, "solute_smiles"] = "CCCCCCCCCCO"  # another molecule ...
    extra.loc[2, "solute_smiles"] = "OCCCCCCCCCC"  # ... written again
    extra["solvent_smiles"] = "O"
    settings = ExtraPairSettings(Path("x"))
    random_fold = select_extra_training(extra, main_rows, _split(), settings).decisions
    scaffold_fold = select_extra_training(
        extra, main_rows, _split(), settings, by_scaffold=True
    ).decisions
    assert list(random_fold["outcome"]) == [USED, USED, DUPLICATE_EXTRA_PAIR]
    assert list(scaffold_fold["outcome"]) == [HELD_OUT_SCAFFOLD, USED, DUPLICATE_EXTRA_PAIR]


def test_a_model_reading_alpb_needs_the_extra_pairs_in_its_descriptor_tables(
    tables, tmp_path, capsys
):
    from pairfactory.qm.shards import system_id_for

    main_path, extra_path = tables
    frames = [pd.read_parquet(main_path), pd.read_parquet(extra_path)]
    ids = [system_id_for(a, b) for f in frames for a, b in zip(f.solute_smiles, f.solvent_smiles)]
    descriptors = pd.DataFrame({"system_id": ids, "dg_solv_alpb_kcal_mol": -5.0})
    only_main = tmp_path / "alpb_main.parquet"
    descriptors.iloc[:30].to_parquet(only_main, index=False)
    both = tmp_path / "alpb_both.parquet"
    descriptors.to_parquet(both, index=False)
    # the extra dataset's own table (the first 10 extra rows repeat main pairs: the same values)
    only_extra = tmp_path / "alpb_extra.parquet"
    descriptors.iloc[30:].to_parquet(only_extra, index=False)
    argv = ["evaluate", "--pairs", str(main_path), "--model", "probpair_2d", "--epochs", "1"]
    argv += ["--hparams", '{"alpb_input": true}', "--extra-pairs", str(extra_path)]
    argv += ["--graph-cache", str(tmp_path / "graphs.pt"), "--no-progress", "--batch-size", "8"]
    assert main([*argv, "--out-dir", str(tmp_path / "a"), "--descriptors", str(only_main)]) != 0
    err = capsys.readouterr().err
    assert "extra training pairs have no row in the descriptor table" in err
    assert "--extra-descriptors" in err
    assert main([*argv, "--out-dir", str(tmp_path / "b"), "--descriptors", str(both)]) == 0
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["inputs"]["missing"] == {"train": 0, "valid": 0, "test": 0}

    # each dataset's own table, read together: the same numbers as one table of both
    argv += ["--descriptors", str(only_main), "--extra-descriptors", str(only_extra)]
    assert main([*argv, "--out-dir", str(tmp_path / "c")]) == 0
    metrics_c = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert metrics_c["inputs"]["missing"] == {"train": 0, "valid": 0, "test": 0}
    assert metrics_c["inputs"]["extra_descriptors"] == str(only_extra)
    assert metrics_c["extra_pairs"]["descriptors"] == str(only_extra)
    assert len(metrics_c["extra_pairs"]["descriptors_sha256"]) == 64
    assert metrics_c["rmse"] == pytest.approx(metrics["rmse"], rel=1e-5)

    # a shared system with another value: the tables came from other engines
    descriptors.iloc[30:].assign(dg_solv_alpb_kcal_mol=-4.0).to_parquet(only_extra, index=False)
    assert main([*argv, "--out-dir", str(tmp_path / "d")]) != 0
    assert "give different values for 10 of the 10 systems they share" in capsys.readouterr().err
    descriptors.iloc[30:45].to_parquet(only_extra, index=False)  # made before the table grew
    assert main([*argv, "--out-dir", str(tmp_path / "e")]) != 0
    assert "looks older than the extra pair table" in capsys.readouterr().err
    # a table built for the water pairs only (`solvation --solvent O`), the extra pairs not
    # narrowed to water: the heavy-water pair is missing, and the message says why
    solvents = [b for f in frames for b in f.solvent_smiles]
    water = descriptors.iloc[30:][[s == "O" for s in solvents[30:]]]
    water.attrs["selected_solvents"] = ["O"]
    water.to_parquet(only_extra, index=False)
    assert main([*argv, "--out-dir", str(tmp_path / "e2")]) != 0
    err = capsys.readouterr().err
    assert "holds only the systems in solvent(s) O" in err and "[2H]O[2H]" in err
    # ... and narrowed to the extra pairs' solvent but out of date: it is named as such
    water.iloc[1:].to_parquet(only_extra, index=False)
    assert main([*argv, "--extra-solvent", "O", "--out-dir", str(tmp_path / "e3")]) != 0
    assert "looks older than the extra pair table" in capsys.readouterr().err
    water.to_parquet(only_extra, index=False)
    assert main([*argv, "--extra-solvent", "O", "--out-dir", str(tmp_path / "e4")]) == 0
    # the fold's own table built for another solvent than its pairs': refused; built for its
    # pairs' solvent it serves, whatever the extra pairs' solvents
    own = descriptors.iloc[:30].copy()
    own.attrs["selected_solvents"] = ["CCO"]
    own.to_parquet(only_main, index=False)
    assert main([*argv, "--extra-solvent", "O", "--out-dir", str(tmp_path / "e5")]) != 0
    assert "holds only the systems in solvent(s) CCO" in capsys.readouterr().err
    # ... unless the model reads nothing from it (the twin without the input)
    no_input = ["{}" if a == '{"alpb_input": true}' else a for a in argv]
    assert main([*no_input, "--extra-solvent", "O", "--out-dir", str(tmp_path / "e5b")]) == 0
    own.attrs["selected_solvents"] = ["O"]  # every pair of the fold's own table is in water
    own.to_parquet(only_main, index=False)
    descriptors.iloc[30:].to_parquet(only_extra, index=False)  # octanol, heavy water: theirs
    assert main([*argv, "--out-dir", str(tmp_path / "e6")]) == 0, capsys.readouterr().err
    descriptors.iloc[:30].to_parquet(only_main, index=False)
    only_extra.unlink()
    assert main([*argv, "--out-dir", str(tmp_path / "f")]) != 0
    assert "descriptor table of the extra pairs not found" in capsys.readouterr().err
    without_own = [a for a in argv if a != str(only_main)]
    without_own.remove("--descriptors")
    assert main([*without_own, "--out-dir", str(tmp_path / "g")]) != 0
    assert "give --descriptors too" in capsys.readouterr().err


def test_a_solvent_the_extra_table_lacks_is_named() -> None:
    main_rows = freesolv_rows(30)
    settings = ExtraPairSettings(Path("x.parquet"), solvents=("O", "CCCCCCCCCCCC"))
    with pytest.raises(UserError, match=r"x.parquet has no pair in solvent\(s\) CCCCCCCCCCCC"):
        select_extra_training(_extra_table(main_rows), main_rows, _split(), settings)


def test_extra_descriptors_need_extra_pairs(tables, tmp_path, capsys):
    main_path, _ = tables
    argv = ["evaluate", "--pairs", str(main_path), "--model", "cigin", "--epochs", "1"]
    argv += ["--out-dir", str(tmp_path / "out"), "--extra-descriptors", str(tmp_path / "x.pq")]
    assert main(argv) != 0
    assert "--extra-descriptors need --extra-pairs" in capsys.readouterr().err
