"""`pairfactory evaluate` end to end on a tiny real table: files, reconciliation, resume, errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("dgl")

from curated_tables import freesolv_rows, write_pair_table  # noqa: E402

from pairfactory.cli import main  # noqa: E402
from pairfactory.cli.evaluate import add_arguments, options_from_config  # noqa: E402
from pairfactory.errors import UserError  # noqa: E402
from pairfactory.ml.evaluate import ProtocolOptions, run_protocol  # noqa: E402
from pairfactory.ml.train import TrainSettings  # noqa: E402


@pytest.fixture()
def table_path(tmp_path) -> Path:
    import torch

    torch.set_num_threads(1)
    return write_pair_table(
        freesolv_rows(30), tmp_path / "pairs" / "freesolv" / "dg_hydration_kcal_mol.parquet"
    )


def _cli(table_path: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "evaluate",
            "--pairs",
            str(table_path),
            "--model",
            "cigin",
            "--split",
            "random",
            "--fold",
            "1",
            "--repeat",
            "0",
            "--out-dir",
            str(out),
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--graph-cache",
            str(out.parent / "graph_cache.pt"),
            "--no-progress",
            *extra,
        ]
    )


def test_evaluate_cli_writes_files_and_resumes(table_path, tmp_path, caplog):
    out = tmp_path / "ev" / "r0-f1"
    assert _cli(table_path, out) == 0
    for name in ("metrics.json", "predictions.parquet", "history.csv", "model.pt"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["n_train"] + metrics["n_valid"] + metrics["n_test"] + metrics["n_unfeaturizable"]
        == 30
    )
    assert (metrics["fold"], metrics["repeat"], metrics["model"], metrics["split"]) == (
        1,
        0,
        "cigin",
        "random",
    )
    assert metrics["settings"]["max_epochs"] == 3 and metrics["settings"]["batch_size"] == 8
    assert metrics["device"] == "cpu" and metrics["split_seed"] == 0 and metrics["model_seed"] == 0
    assert metrics["code_commit"] is None or len(metrics["code_commit"]) == 40
    history = pd.read_csv(out / "history.csv")
    assert len(history) == metrics["epochs_run"] == 3
    assert metrics["best_epoch"] == int(history["valid_rmse"].idxmin()) + 1
    assert metrics["rmse"] == pytest.approx(
        history.loc[metrics["best_epoch"] - 1, "test_rmse"], rel=1e-5
    )
    preds = pd.read_parquet(out / "predictions.parquet")
    assert list(preds.columns) == ["pair_id", "role", "y_true", "y_pred", "solute_similarity"]
    table = pd.read_parquet(table_path)
    assert len(table) == 30
    assert sorted(preds["pair_id"]) == sorted(table["pair_id"])  # every pair once, in one role
    truth = preds.merge(table[["pair_id", "value"]], on="pair_id")
    assert (
        truth["y_true"] == truth["value"].astype("float32").astype(float)
    ).all()  # ids map to the right rows
    assert (preds["role"] == "test").sum() == metrics["n_test"]

    # resume: a finished fold is skipped (files untouched), --force reruns it with the same numbers
    stamp = (out / "metrics.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="pairfactory.ml.evaluate"):
        assert _cli(table_path, out) == 0
    assert "skipping" in caplog.text
    assert (out / "metrics.json").stat().st_mtime_ns == stamp
    assert _cli(table_path, out, "--force") == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["rmse"] == metrics["rmse"]  # seeded: same config, same numbers


def test_evaluate_cli_errors(table_path, tmp_path, capsys):
    out = tmp_path / "ev" / "bad"
    assert _cli(tmp_path / "missing.parquet", out) == 2
    assert "pair table not found" in capsys.readouterr().err
    assert _cli(table_path, out, "--folds", "2", "--fold", "3") == 2
    assert "--fold must be in 0..1" in capsys.readouterr().err
    assert _cli(table_path, out, "--hparams", "{not json") == 2
    assert "--hparams must be a JSON object" in capsys.readouterr().err
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"pair_id": ["a"], "value": [1.0]}).to_parquet(bad)
    assert _cli(bad, out) == 2
    assert "missing column" in capsys.readouterr().err
    assert not (out / "metrics.json").exists()


def test_unfeaturizable_pairs_are_recorded(tmp_path):
    import torch

    torch.set_num_threads(1)
    table = freesolv_rows(24)
    # a pentavalent carbon: RDKit refuses it, so the featurizer rejects the pair
    table.loc[3, "solute_smiles"] = "C(C)(C)(C)(C)C"
    path = write_pair_table(table, tmp_path / "t.parquet")
    options = ProtocolOptions(
        settings=TrainSettings(max_epochs=2, batch_size=8, device="cpu"),
        graph_cache=tmp_path / "gc.pt",
    )
    frame = run_protocol(
        path, "cigin", "random", tmp_path / "ev", options, repeats=1, folds=[0, 1], progress=False
    )
    assert len(frame) == 2
    for row in frame.itertuples():
        assert row.n_unfeaturizable == 1  # the bad row is in every fold, in one role
        assert row.n_train + row.n_valid + row.n_test + row.n_unfeaturizable == 24
    fold_dirs = sorted(
        (tmp_path / "ev" / "freesolv" / "dg_hydration_kcal_mol" / "cigin" / "random").iterdir()
    )
    assert [d.name for d in fold_dirs] == ["r0-f0", "r0-f1"]
    rejected = pd.read_csv(fold_dirs[0] / "unfeaturizable.csv")
    assert rejected["pair_id"].tolist() == [table.loc[3, "pair_id"]]
    assert rejected["reason"].tolist() == ["solute_unfeaturizable"]


def test_options_from_config(tmp_path):
    import argparse

    from pairfactory.config import load_config

    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "seed: 11\nevaluate:\n  epochs: 9\n  batch_size: 4\n  learning_rate: 0.01\n"
        "  patience: null\n  folds: 3\n"
    )
    config = load_config(cfg)
    options = options_from_config(config)
    assert options.seed == 11 and options.n_folds == 3
    assert (options.settings.max_epochs, options.settings.batch_size, options.settings.lr) == (
        9,
        4,
        0.01,
    )
    assert options.settings.patience == 9  # null = never stop early
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--pairs", "x", "--model", "cgib", "--out", "y", "--epochs", "2", "--seed", "5"]
    )
    options = options_from_config(config, args)
    assert (
        options.settings.max_epochs == 2 and options.seed == 5 and options.settings.batch_size == 4
    )


def test_no_config_file_is_the_schema_defaults_which_are_cgibs_protocol():
    from pairfactory.config import default_config

    assert options_from_config(default_config()) == options_from_config(None)
    assert options_from_config(None).settings == TrainSettings()


def test_config_hidden_dim_null_keeps_each_models_published_size():
    assert "hidden_dim" not in options_from_config({"evaluate": {"hidden_dim": None}}).hparams
    assert options_from_config({"evaluate": {"hidden_dim": 24}}).hparams["hidden_dim"] == 24


def test_model_hparams_go_to_their_model_and_the_flag_wins_for_the_model_it_runs():
    import argparse

    config = {
        "evaluate": {"hidden_dim": 24, "model_hparams": {"cgib": {"beta": 0.1, "hidden_dim": 40}}}
    }
    options = options_from_config(config)
    assert options.hparams_for("cgib") == {
        "hidden_dim": 40,
        "beta": 0.1,
    }  # the model's own over the shared size
    assert options.hparams_for("cigin") == {"hidden_dim": 24}
    assert options.hparams_for("attentivefp") == {}  # it has no hidden_dim
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--pairs", "x", "--model", "cgib", "--out", "y", "--hparams", '{"beta": 0.001}']
    )
    options = options_from_config(config, args)
    assert options.hparams_for("cgib") == {"hidden_dim": 40, "beta": 0.001}
    assert options.hparams_for("cgib_contrastive") == {"hidden_dim": 24}


def test_table_hparams_go_to_their_tables_folds_over_model_hparams_and_flags_win():
    """evaluate.table_hparams: a table's own hyper-parameters for a model, over the model's
    model_hparams, for that table only; a flag still wins for the model the call runs."""
    import argparse

    config = {
        "evaluate": {
            "model_hparams": {"probpair": {"lr": 0.0003, "contact_head": "cosine"}},
            "table_hparams": {
                "mnsol/dg_solv_kcal_mol": {
                    "probpair": {"contact_head": "bilinear", "lr": 0.001},
                    "cgib": {"beta": 0.01},
                }
            },
        }
    }
    mnsol = options_from_config(config, table="mnsol/dg_solv_kcal_mol")
    assert mnsol.hparams_for("probpair")["contact_head"] == "bilinear"
    assert mnsol.settings_for("probpair").lr == 0.001
    assert mnsol.hparams_for("cgib")["beta"] == 0.01
    for other in (options_from_config(config, table="freesolv/dg_hydration_kcal_mol"),
                  options_from_config(config)):  # fmt: skip
        assert other.hparams_for("probpair")["contact_head"] == "cosine"
        assert other.settings_for("probpair").lr == 0.0003
        assert "beta" not in other.hparams_for("cgib")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--pairs", "x", "--model", "probpair", "--out", "y", "--lr", "0.002"]
    argv += ["--hparams", '{"contact_head": "cosine"}']
    flagged = options_from_config(config, parser.parse_args(argv), "mnsol/dg_solv_kcal_mol")
    assert flagged.settings_for("probpair").lr == 0.002
    assert flagged.hparams_for("probpair")["contact_head"] == "cosine"


def test_a_training_flag_wins_over_the_models_own_config_setting():
    """config/full.yaml gives probpair its own lr and batch size: `--lr` on the command line
    must still be what trains (for the model the call runs; other models keep theirs)."""
    import argparse

    config = {
        "evaluate": {
            "learning_rate": 0.001,
            "model_hparams": {
                "probpair": {"lr": 0.0003, "batch_size": 32, "hidden_dim": 40, "beta": 0.1},
                "cgib": {"lr": 0.0003},
            },
        }
    }
    assert options_from_config(config).settings_for("probpair").lr == 0.0003
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--pairs", "x", "--model", "probpair", "--out", "y", "--lr", "0.002"]
    options = options_from_config(config, parser.parse_args([*argv, "--hidden-dim", "16"]))
    settings = options.settings_for("probpair")
    assert (settings.lr, settings.batch_size) == (0.002, 32)  # batch size not given: its own
    assert options.hparams_for("probpair")["hidden_dim"] == 16
    assert options.hparams_for("probpair")["beta"] == 0.1
    assert options.settings_for("cgib").lr == 0.0003


def test_training_keys_of_model_hparams_set_that_models_training_only():
    config = {
        "evaluate": {
            "batch_size": 32,
            "lr": 0.001,
            "model_hparams": {
                "probpair": {"lr": 0.0003, "beta": 0.01},
                "cigin": {"batch_size": 64},
            },
        }
    }
    options = options_from_config(config)
    assert options.settings_for("probpair").lr == 0.0003
    assert options.settings_for("probpair").batch_size == 32
    assert options.hparams_for("probpair") == {"beta": 0.01}  # no training key reaches the model
    assert (
        options.settings_for("cigin").batch_size == 64 and options.settings_for("cigin").lr == 0.001
    )
    assert options.settings_for("probpair_2d") == options.settings  # no keys of its own
    # a model's own training keys are checked like the shared ones, naming the key
    config["evaluate"]["model_hparams"]["cigin"] = {"batch_size": 64.5}
    with pytest.raises(UserError, match="batch_size must be a whole number"):
        options_from_config(config).settings_for("cigin")
    config["evaluate"]["model_hparams"]["cigin"] = {"lr": "fast"}
    with pytest.raises(UserError, match="lr must be of type float"):
        options_from_config(config).settings_for("cigin")
    for bad in ({"weight_decay": True}, {"max_epochs": float("inf")}):
        with pytest.raises(UserError, match=f"{next(iter(bad))} must be"):
            TrainSettings.from_mapping(bad)


def test_out_is_the_old_name_of_out_dir():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for flag in ("--out-dir", "--out"):
        args = parser.parse_args(["--pairs", "x", "--model", "cgib", flag, "y"])
        assert args.out_dir == Path("y")


def test_an_ensemble_fold_is_its_members_mean_with_their_spread_as_sigma(table_path, tmp_path):
    import json

    import pandas as pd

    from pairfactory.ml.report import collect_metrics

    single, ensemble = tmp_path / "ev" / "single", tmp_path / "ev" / "ensemble"
    assert _cli(table_path, single) == 0
    assert _cli(table_path, ensemble, "--ensemble", "3") == 0
    one = json.loads((single / "metrics.json").read_text())
    three = json.loads((ensemble / "metrics.json").read_text())
    assert three["ensemble"] == 3 and len(three["member_rmse"]) == 3
    # member 0 is the single model of the fold (same seeds), the others differ
    assert three["member_rmse"][0] == pytest.approx(one["rmse"], rel=1e-6)
    assert len(set(three["member_rmse"])) == 3
    # best epoch and epochs run are member 0's, consistent with its history.csv
    assert three["best_epoch"] == one["best_epoch"] == three["member_best_epoch"][0]
    assert three["epochs_run"] == one["epochs_run"] and len(three["member_best_epoch"]) == 3
    assert three["nll"] is not None and three["sigma_scale"] > 0  # the spread is a σ
    predictions = pd.read_parquet(ensemble / "predictions.parquet")
    assert (predictions["y_std"] > 0).all()
    assert (ensemble / "model-m1.pt").is_file() and (ensemble / "model-m2.pt").is_file()
    assert one.get("nll") is None  # a single CIGIN has no σ
    labels = set(collect_metrics(tmp_path / "ev")["model"])
    assert labels == {"cigin", "cigin@ensemble=3"}


def test_a_contrastive_term_without_decoys_is_reported(caplog):
    from pairfactory.ml.evaluate import _warn_without_decoys

    summary = {"train_complexes": 40, "train_decoys": 0, "settings": {"decoys_per_sample": 0}}
    with caplog.at_level(logging.WARNING, logger="pairfactory.ml.evaluate"):
        _warn_without_decoys("probpair_2d", {}, summary)  # no contrastive term at all
        _warn_without_decoys("probpair", {"contrastive_weight": 0.0}, summary)
        assert not caplog.records
        _warn_without_decoys("probpair", {}, summary)
    assert "decoys_per_sample is 0; set it >= 1" in caplog.text
    caplog.clear()
    unplaced = summary | {"settings": {"decoys_per_sample": 2}, "train_decoys_requested": 80}
    with caplog.at_level(logging.WARNING, logger="pairfactory.ml.evaluate"):
        _warn_without_decoys("probpair", {}, unplaced)
    assert "none of the 80 requested could be placed" in caplog.text


def test_a_model_with_the_alpb_input_reads_every_pairs_descriptor(table_path, tmp_path, capsys):
    """Every role's pairs get their ΔG_solv(ALPB) as an input (it is known at inference); a
    missing value or a pair the table lacks is counted; the report labels the variant; without a
    descriptor table it is refused with the reason (final models: test_final_alpb.py)."""
    from pairfactory.ml.report import collect_metrics
    from pairfactory.qm.shards import system_id_for

    table = pd.read_parquet(table_path)
    ids = [system_id_for(a, b) for a, b in zip(table.solute_smiles, table.solvent_smiles)]
    descriptors = pd.DataFrame(
        {"system_id": ids[1:], "dg_solv_alpb_kcal_mol": [-4.0] * 5 + [None] + [-6.5] * 23}
    )  # ids[0] absent, ids[6] without a value
    descriptors_path = tmp_path / "alpb.parquet"
    descriptors.to_parquet(descriptors_path, index=False)
    hparams = '{"alpb_input": true, "contrastive_weight": 0, "contact_weight": 0}'
    out = tmp_path / "ev" / "freesolv" / "dg_hydration_kcal_mol" / "probpair" / "random" / "r0-f1"
    base = ["--model", "probpair", "--hparams", hparams, "--standardize-targets"]
    assert _cli(table_path, out, *base) != 0
    assert "give the descriptor table (--descriptors" in capsys.readouterr().err
    assert _cli(table_path, out, *base, "--descriptors", str(descriptors_path)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    inputs = metrics["inputs"]
    assert inputs["names"] == ["dg_solv_alpb_kcal_mol"]
    assert inputs["descriptors"] == str(descriptors_path)
    assert sum(inputs["missing"].values()) == 2  # the absent pair and the one without a value
    assert metrics["hparams"]["alpb_input"] is True
    (label,) = set(collect_metrics(tmp_path / "ev")["model"])
    assert label.startswith("probpair@alpb_input=true,")


def test_each_pair_gets_its_own_input_row_in_every_role():
    """Inputs follow their pairs through the split and past a rejected row (distinct values)."""
    import numpy as np

    from pairfactory.ml.evaluate import _datasets_for_fold
    from pairfactory.ml.graph_cache import GraphCache
    from pairfactory.ml.splits import make_splits

    table = freesolv_rows(20)
    table.loc[4, "solute_smiles"] = "C(C)(C)(C)(C)C"  # unfeaturizable: rejected in its role
    inputs = np.arange(len(table), dtype=np.float32).reshape(-1, 1) * 1.5
    split = make_splits("random", table["solute_smiles"].tolist(), n_folds=4, seed=3)[2]
    datasets, rejected = _datasets_for_fold(table, split, GraphCache(None), None, inputs)
    assert rejected["pair_id"].tolist() == [table.loc[4, "pair_id"]]
    seen = []
    for role, rows in (("train", split.train), ("valid", split.valid), ("test", split.test)):
        for item in datasets[role].items:
            table_row = rows[item.index]  # item.index: the row within the role's part
            assert item.inputs[0] == inputs[table_row, 0], (role, table_row)
            seen.append(table_row)
    assert sorted(seen) == [r for r in range(len(table)) if r != 4]
