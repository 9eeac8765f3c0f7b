"""Final models end to end on real FreeSolv pairs: `pairfactory train` writes a model folder,
`pairfactory predict` and `load_model` answer from it with σ and applicability flags, files stream
in chunks row for row, incompatible folders are refused, and a training run killed with SIGKILL
resumes to the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("dgl")

from curated_tables import freesolv_rows, write_pair_table  # noqa: E402

from pairfactory.cli import main  # noqa: E402
from pairfactory.errors import UserError  # noqa: E402
from pairfactory.ml.featurize import FEATURE_SPEC_HASH  # noqa: E402
from pairfactory.ml.model_dir import (  # noqa: E402
    CARD_FILE,
    CHECKPOINT_FILE,
    HOLDOUT_FILE,
    MOLECULES_FILE,
    member_dir,
)
from pairfactory.ml.predictor import (  # noqa: E402
    combine_members,
    load_model,
    predictive_sigma,
)
from pairfactory.ml.uncertainty import SigmaCalibration, fit_sigma_calibration  # noqa: E402

TARGET = "dg_hydration_kcal_mol"
TRAIN_FLAGS = ["--epochs", "4", "--batch-size", "16", "--hidden-dim", "16", "--threads", "1"]


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "freesolv" / f"{TARGET}.parquet"
    write_pair_table(freesolv_rows(60), path)
    return path


@pytest.fixture(scope="module")
def model_dir(table_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "probpair_2d"
    cache = out.parent / "graphs.pt"
    argv = ["train", "--pairs", str(table_path), "--model", "probpair_2d", "--ensemble", "2"]
    argv += ["--out-dir", str(out), "--graph-cache", str(cache), "--no-progress", *TRAIN_FLAGS]
    assert main(argv) == 0
    return out


def test_the_model_folder_holds_what_a_user_needs(model_dir: Path, table_path: Path) -> None:
    card = json.loads((model_dir / CARD_FILE).read_text())
    assert card["model"] == "probpair_2d" and card["target"] == TARGET
    assert card["unit"] == "kcal/mol"
    assert card["featurization"]["spec_hash"] == FEATURE_SPEC_HASH
    assert card["training_table"]["rows"] == 60 and card["training_table"]["pairs_used"] == 60
    assert len(card["training_table"]["sha256"]) == 64
    holdout = pd.read_parquet(model_dir / HOLDOUT_FILE)
    n_novel = int((holdout["solute_similarity"] < 0.3).sum())
    assert card["holdout"] == {"fraction": 0.1, "seed": 0, "n": 6, "novel_pairs": n_novel}
    # the domain is the training pairs' molecules: the holdout's own solutes are not in it
    molecules = pd.read_parquet(model_dir / MOLECULES_FILE)
    table = pd.read_parquet(table_path).set_index("pair_id")
    holdout_solutes = set(table.loc[holdout["pair_id"], "solute_smiles"])
    training_solutes = set(table.loc[~table.index.isin(holdout["pair_id"]), "solute_smiles"])
    domain_solutes = set(molecules.loc[molecules["role"] == "solute", "smiles"])
    assert domain_solutes == training_solutes and holdout_solutes - training_solutes
    assert not (holdout_solutes - training_solutes) & domain_solutes
    assert {"C", "O", "H"} <= set(card["domain"]["elements"])
    assert card["domain"]["solvent_heavy_atoms"] == [1, 1]  # water only
    assert {"torch", "dgl", "rdkit", "pairfactory"} <= set(card["versions"])
    assert [m["seed"] for m in card["members"]] == [0, 1]
    assert all(m["sigma_scale"] > 0 for m in card["members"])
    assert card["sigma_scale"] > 0  # the whole ensemble's σ, calibrated on the holdout
    assert np.isfinite(card["metrics"]["holdout_rmse"])
    for member in (0, 1):
        folder = member_dir(model_dir, member)
        assert (folder / "weights.pt").is_file() and (folder / "history.csv").is_file()
        assert not (folder / CHECKPOINT_FILE).exists()  # removed once the member finished
    # the hyper-parameters came from the flags and are recorded resolved
    assert card["hparams"]["hidden_dim"] == 16
    # no per-pair inputs: no card field, and a fingerprint as before they existed (a rerun of an
    # older folder skips its finished members)
    assert card["inputs"] is None
    member = json.loads((member_dir(model_dir, 0) / "member.json").read_text())
    assert "inputs" not in member["fingerprint"]


def test_a_rerun_of_a_finished_member_trains_nothing(
    model_dir: Path, table_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = (member_dir(model_dir, 0) / "weights.pt").read_bytes()
    card_before = json.loads((model_dir / "model.json").read_text())
    argv = ["train", "--pairs", str(table_path), "--model", "probpair_2d", "--ensemble", "2"]
    argv += ["--out-dir", str(model_dir), "--no-progress", *TRAIN_FLAGS]
    argv += ["--graph-cache", str(model_dir.parent / "graphs.pt")]
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    assert caplog.text.count("already trained") == 2
    assert (member_dir(model_dir, 0) / "weights.pt").read_bytes() == before
    # the resolved hyper-parameters come back from the members' records, not from a rebuilt model
    assert json.loads((model_dir / "model.json").read_text())["hparams"] == card_before["hparams"]


def test_predict_one_pair_prints_value_unit_and_both_sigmas(
    model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        main(["predict", "--model-dir", str(model_dir), "--solute", "CCO", "--solvent", "O"]) == 0
    )
    out = capsys.readouterr().out
    assert f"{TARGET} = " in out and "kcal/mol" in out
    assert (
        "(σ, calibrated on the holdout)" in out and "spread of the 2 ensemble members alone" in out
    )
    assert (
        main(
            [
                "predict",
                "--model-dir",
                str(model_dir),
                "--solute",
                "CCO",
                "--solvent",
                "O",
                "--json",
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row[f"{TARGET}_sigma"] > 0
    assert row[f"{TARGET}_ensemble_sigma"] > 0 and row["model_time_s"] < 10


def test_load_model_flags_extrapolation_and_rejects_bad_rows(model_dir: Path) -> None:
    from pairfactory import load_model as top_level

    assert top_level is load_model
    model = load_model(model_dir)
    solutes = ["CCO", "c1ccccc1[Fe]", "not a smiles", "C" * 40, "", "CCO"]
    solvents = ["O", "O", "O", "O", "O", "C1CC"]
    frame = model.predict(solutes, solvents)
    assert list(frame["solute_smiles"]) == solutes  # one row per input, in order
    assert list(frame["status"]) == ["ok", "ok", "rejected", "ok", "rejected", "rejected"]
    assert "RDKit cannot parse" in frame.loc[2, "reason"]
    assert frame.loc[5, "reason"].startswith("solvent:")
    assert frame[TARGET].notna().tolist() == [s == "ok" for s in frame["status"]]
    ok = frame[frame["status"] == "ok"]
    assert (ok[f"{TARGET}_sigma"] > 0).all() and (ok[f"{TARGET}_ensemble_sigma"] > 0).all()
    assert "elements not seen in training: Fe" in frame.loc[1, "applicability"]
    assert "solute has 40 heavy atoms" in frame.loc[3, "applicability"]
    assert frame["extrapolation"].tolist() == [False, True, False, True, False, False]
    # a solute unlike every training solute is flagged by its similarity
    far = model.predict(["O=S1(=O)c2ccccc2-c2ccccc21"], ["O"])
    assert far.loc[0, "solute_similarity"] < 0.3 and far.loc[0, "extrapolation"]
    assert "Tanimoto" in far.loc[0, "applicability"]
    # eval-mode inference is deterministic
    again = model.predict(solutes, solvents)
    pd.testing.assert_frame_equal(frame, again)


def test_sigma_grows_with_the_solutes_novelty_by_the_cards_calibration(model_dir: Path) -> None:
    """σ² gains (novelty_sigma (1 − similarity))²: nothing for a training solute, most for a
    solute unlike all of them; a card without novelty_sigma (older folders) adds nothing."""
    model = load_model(model_dir)
    molecules = pd.read_parquet(model_dir / MOLECULES_FILE)
    known = molecules.loc[molecules["role"] == "solute", "smiles"].iloc[0]
    solutes, solvents = [known, "O=S1(=O)c2ccccc2-c2ccccc21"], ["O", "O"]
    model.card.novelty_sigma = None
    plain = model.predict(solutes, solvents)
    model.card.novelty_sigma = 3.0
    grown = model.predict(solutes, solvents)
    novelty = 1.0 - grown["solute_similarity"].to_numpy()
    assert novelty[0] == 0.0 and novelty[1] > 0.7
    np.testing.assert_allclose(
        grown[f"{TARGET}_sigma"] ** 2 - plain[f"{TARGET}_sigma"] ** 2, (3.0 * novelty) ** 2
    )
    np.testing.assert_allclose(grown[TARGET], plain[TARGET])


def test_molecules_encoded_once_give_the_plain_forward_numbers(model_dir: Path) -> None:
    # the predictor runs each unique molecule's encoder once; the pairs must not notice
    import dgl

    from pairfactory.ml.featurize import featurize_smiles

    solutes = ["CCO", "CCCO", "CCO", "c1ccccc1O", "CCCO", "CC(=O)OC"]
    solvents = ["O"] * len(solutes)
    fast = load_model(model_dir).predict(solutes, solvents)
    plain = load_model(model_dir)
    graphs_u = dgl.batch([featurize_smiles(s) for s in solutes])
    graphs_v = dgl.batch([featurize_smiles(s) for s in solvents])
    means = []
    with torch.no_grad():
        for record, member in zip(plain.card.members, plain.members, strict=True):
            out = member(graphs_u, graphs_v)
            means.append(out.prediction.double().numpy() * record.target_std + record.target_mean)
    np.testing.assert_allclose(fast[TARGET].to_numpy(), np.mean(means, axis=0), atol=1e-5)


def test_sigma_is_the_ensembles_own_sigma_and_spread_calibrated_as_a_whole(
    model_dir: Path,
) -> None:
    """The σ that predict gives is the one evaluate scores: the members' own σ and their spread
    together, with one factor fitted on the holdout (not each member calibrated alone, the
    spread left out)."""
    model = load_model(model_dir)
    holdout = pd.read_parquet(model_dir / HOLDOUT_FILE)
    pairs = freesolv_rows(60).set_index("pair_id").loc[holdout["pair_id"]]
    predicted = model.predict(list(pairs.solute_smiles), list(pairs.solvent_smiles))
    np.testing.assert_allclose(predicted[TARGET], holdout["y_pred"], rtol=1e-5, atol=1e-5)
    # the holdout's σ grew with each solute's novelty against the training solutes, and predict
    # measures novelty against the same solutes: the same σ
    np.testing.assert_allclose(predicted[f"{TARGET}_sigma"], holdout["y_std"], rtol=1e-5)
    np.testing.assert_allclose(predicted["solute_similarity"], holdout["solute_similarity"])
    calibration = SigmaCalibration(model.card.sigma_scale, model.card.novelty_sigma)
    # calibrated on the holdout as a whole, and predict applies the card's calibration
    members = [pd.read_parquet(member_dir(model_dir, m) / "holdout.parquet") for m in (0, 1)]
    own = [
        frame["y_std"] / record.sigma_scale
        for frame, record in zip(members, model.card.members, strict=True)
    ]
    spread = np.std([frame["y_pred"] for frame in members], axis=0)
    np.testing.assert_allclose(spread, holdout["y_std_ensemble"], rtol=1e-6, atol=1e-9)
    raw = np.sqrt(np.mean(np.square(own), axis=0) + spread**2)
    fitted = fit_sigma_calibration(
        holdout["y_true"], holdout["y_pred"], raw, holdout["solute_similarity"]
    )
    assert (calibration.scale, calibration.novelty_sigma) == pytest.approx(
        (fitted.scale, fitted.novelty_sigma)
    )
    np.testing.assert_allclose(
        holdout["y_std"], calibration.apply(raw, holdout["solute_similarity"]), rtol=1e-6
    )


def test_an_ensemble_of_point_models_has_its_calibrated_spread_as_sigma(
    table_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cigin"
    argv = ["train", "--pairs", str(table_path), "--model", "cigin", "--ensemble", "2"]
    argv += ["--out-dir", str(out), "--graph-cache", str(tmp_path / "g.pt"), "--no-progress"]
    assert main([*argv, *TRAIN_FLAGS]) == 0
    model = load_model(out)
    assert all(record.sigma_scale is None for record in model.card.members)
    frame = model.predict(["CCO", "CCCO"], ["O", "O"])
    sigma, spread = frame[f"{TARGET}_sigma"], frame[f"{TARGET}_ensemble_sigma"]
    assert (spread > 0).all()
    calibration = SigmaCalibration(model.card.sigma_scale, model.card.novelty_sigma)
    np.testing.assert_allclose(
        sigma, calibration.apply(spread, frame["solute_similarity"]), rtol=1e-6
    )
    holdout = pd.read_parquet(out / HOLDOUT_FILE)
    np.testing.assert_allclose(
        holdout["y_std"],
        calibration.apply(holdout["y_std_ensemble"], holdout["solute_similarity"]),
        rtol=1e-6,
    )


def test_ensemble_combination() -> None:
    means = np.array([[1.0, 2.0], [3.0, 2.0]])
    stds = np.array([[1.0, 0.5], [1.0, 0.5]])
    combined = combine_members(means, stds)
    np.testing.assert_allclose(combined["y_pred"], [2.0, 2.0])
    np.testing.assert_allclose(combined["y_std"], [1.0, 0.5])
    np.testing.assert_allclose(combined["y_std_ensemble"], [1.0, 0.0])
    np.testing.assert_allclose(predictive_sigma(combined), [np.sqrt(2.0), 0.5])
    point = combine_members(means, None)
    np.testing.assert_allclose(predictive_sigma(point), [1.0, 0.0])  # the spread alone
    assert set(combine_members(means[:1], None)) == {"y_pred"}
    assert predictive_sigma(combine_members(means[:1], None)) is None
    np.testing.assert_allclose(predictive_sigma(combine_members(means[:1], stds[:1])), [1.0, 0.5])


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_predict_file_streams_row_for_row(model_dir: Path, tmp_path: Path, suffix: str) -> None:
    solutes = ["CCO", "CCCO", "bad(", "c1ccccc1", "", "CC(=O)O"] * 4 + ["CCN"]
    source = pd.DataFrame({"id": range(len(solutes)), "mol": solutes, "solv": "O"})
    source.to_csv(tmp_path / "in.csv", sep=";", index=False)
    out = tmp_path / f"out{suffix}"
    argv = ["predict", "--model-dir", str(model_dir), "--input", str(tmp_path / "in.csv")]
    argv += ["--delimiter", ";", "--solute-column", "mol", "--solvent-column", "solv"]
    argv += ["--out", str(out), "--chunk-rows", "4", "--no-progress"]
    assert main(argv) == 0
    written = (
        pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out, keep_default_na=False)
    )
    assert len(written) == len(solutes)
    assert written["row"].tolist() == list(range(len(solutes)))
    assert written["solute_smiles"].fillna("").astype(str).tolist() == solutes
    assert (written["status"] == "rejected").sum() == 8
    direct = load_model(model_dir).predict(solutes, ["O"] * len(solutes))
    np.testing.assert_allclose(
        pd.to_numeric(written[TARGET]).to_numpy(), direct[TARGET].to_numpy(), rtol=1e-6
    )


def test_predict_file_errors_say_how_to_fix(model_dir: Path, tmp_path: Path) -> None:
    model = load_model(model_dir)
    pd.DataFrame({"smiles": ["CCO"]}).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(UserError, match=r"no column\(s\) \['solvent_smiles'\].*--solvent-column"):
        model.predict_file(tmp_path / "in.csv", tmp_path / "o.parquet", "smiles", "solvent_smiles")
    with pytest.raises(UserError, match=r"\.parquet or \.csv"):
        model.predict_file(tmp_path / "in.csv", tmp_path / "o.xlsx", "smiles", "solvent_smiles")
    assert main(["predict", "--model-dir", str(model_dir), "--solute", "CCO"]) == 2
    (tmp_path / "header_only.csv").write_text("solute_smiles,solvent_smiles\n")
    counts = model.predict_file(
        tmp_path / "header_only.csv", tmp_path / "empty.parquet", "solute_smiles", "solvent_smiles"
    )
    assert counts["rows"] == 0 and len(pd.read_parquet(tmp_path / "empty.parquet")) == 0


def test_an_incompatible_model_folder_is_refused(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(model_dir, copy)
    card = json.loads((copy / CARD_FILE).read_text())
    card["featurization"]["spec_hash"] = "0123456789abcdef"
    (copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(UserError, match="featurization '0123456789abcdef'.*retrain"):
        load_model(copy)
    card["format"] = 1  # before the ensemble's σ was calibrated as a whole
    (copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(UserError, match="format 1.*finished members are reused"):
        load_model(copy)
    (copy / CARD_FILE).unlink()
    with pytest.raises(UserError, match="training has not finished"):
        load_model(copy)


def _train_command(table_path: Path, out: Path, epochs: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from pairfactory.cli import main; sys.exit(main())",
        "train",
        "--pairs",
        str(table_path),
        "--model",
        "cigin",
        "--out-dir",
        str(out),
        "--graph-cache",
        str(out.parent / f"{out.name}-graphs.pt"),
        "--epochs",
        str(epochs),
        "--patience",
        str(epochs),
        "--batch-size",
        "8",
        "--hidden-dim",
        "16",
        "--threads",
        "1",
        "--checkpoint-every-min",
        "0",  # a checkpoint after every epoch
        "--no-progress",
    ]


def test_a_run_killed_with_sigkill_resumes_to_the_same_numbers(
    table_path: Path, tmp_path: Path
) -> None:
    epochs = 40
    reference = tmp_path / "uninterrupted"
    subprocess.run(_train_command(table_path, reference, epochs), check=True, capture_output=True)

    resumed = tmp_path / "killed"
    checkpoint = member_dir(resumed, 0) / CHECKPOINT_FILE
    process = subprocess.Popen(
        _train_command(table_path, resumed, epochs),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # a few more epochs
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    state = torch.load(checkpoint, weights_only=True)
    assert 1 <= state["epoch"] < epochs, "the run must be killed mid-training"
    assert not (resumed / CARD_FILE).exists()

    rerun = subprocess.run(
        _train_command(table_path, resumed, epochs), check=True, capture_output=True, text=True
    )
    assert f"after epoch {state['epoch']}" in rerun.stderr
    for name in ("weights.pt",):
        a = torch.load(member_dir(reference, 0) / name, weights_only=True)
        b = torch.load(member_dir(resumed, 0) / name, weights_only=True)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    history_a = pd.read_csv(member_dir(reference, 0) / "history.csv").drop(columns="seconds")
    history_b = pd.read_csv(member_dir(resumed, 0) / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(history_a, history_b)
    card_a = json.loads((reference / CARD_FILE).read_text())
    card_b = json.loads((resumed / CARD_FILE).read_text())
    assert card_a["metrics"]["holdout_rmse"] == card_b["metrics"]["holdout_rmse"]


def test_a_checkpoint_of_other_settings_is_not_resumed(table_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    command = _train_command(table_path, out, 3)
    subprocess.run(command, check=True, capture_output=True)
    # leave a checkpoint of a 3-epoch run behind, then ask for 5 epochs
    checkpoint = member_dir(out, 0) / CHECKPOINT_FILE
    (out / CARD_FILE).unlink()
    (member_dir(out, 0) / "member.json").unlink()
    from pairfactory.ml.checkpoint import TrainingState, save_training_state

    save_training_state(
        TrainingState(
            epoch=1,
            model={},
            optimizer={},
            scheduler={},
            rng={},
            history=[],
            best_epoch=1,
            best_valid_mse=1.0,
            best_model={},
            fingerprint={"model": "cigin", "settings": "other"},
        ),
        checkpoint,
    )
    result = subprocess.run(_train_command(table_path, out, 5), capture_output=True, text=True)
    assert result.returncode == 2
    assert "belongs to a run with other settings" in result.stderr
    assert "delete it to start over" in result.stderr
