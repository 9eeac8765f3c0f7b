"""A final model that reads ALPB ΔG_solv as an input (alpb_input: true): `train` records the QM
engine its descriptor table came from and refuses a table of another engine; `load_model` needs
the function that computes the inputs; the predictor feeds them exactly as training did (the
holdout predictions come back); a missing value is noted, and is an extrapolation where training
rarely saw one. With the real xtb program: `solvation`, `train` and `predict` end to end, the
value at prediction recomputed equal to the training table's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("dgl")

from curated_tables import freesolv_rows, write_pair_table  # noqa: E402

from pairfactory.cli import main  # noqa: E402
from pairfactory.errors import UserError  # noqa: E402
from pairfactory.ml.evaluate import ProtocolOptions  # noqa: E402
from pairfactory.ml.final import train_final  # noqa: E402
from pairfactory.ml.model_dir import HOLDOUT_FILE  # noqa: E402
from pairfactory.ml.predictor import load_model  # noqa: E402
from pairfactory.ml.train import TrainSettings  # noqa: E402
from pairfactory.qm.shards import system_id_for  # noqa: E402

TARGET = "dg_hydration_kcal_mol"
ALPB = "dg_solv_alpb_kcal_mol"
TAG = "xtb-0123abcd"
SOURCE = {"engine": {"name": "xtb", "xtb": {}}, "engine_tag": TAG}


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    """40 FreeSolv pairs and a descriptor table: ΔG_solv near the label, one pair without."""
    folder = tmp_path_factory.mktemp("alpb")
    pairs = freesolv_rows(40)
    table_path = folder / "freesolv" / f"{TARGET}.parquet"
    write_pair_table(pairs, table_path)
    values = pairs["value"].to_numpy() + np.random.default_rng(0).normal(0, 0.5, len(pairs))
    values[3] = np.nan
    descriptors = pd.DataFrame(
        {
            "system_id": [
                system_id_for(a, b) for a, b in zip(pairs.solute_smiles, pairs.solvent_smiles)
            ],
            "solute_smiles": pairs["solute_smiles"],
            "solvent_smiles": pairs["solvent_smiles"],
            ALPB: values,
            "status": ["ok"] * 3 + ["failed"] + ["ok"] * 36,
            "xtb_version": "6.5.1",
            "engine_tag": TAG,
        }
    )
    descriptors_path = folder / "alpb.parquet"
    descriptors.to_parquet(descriptors_path, index=False)
    return table_path, descriptors_path, descriptors


def _options(descriptors: Path, graph_cache: Path) -> ProtocolOptions:
    return ProtocolOptions(
        settings=TrainSettings(max_epochs=3, batch_size=16, device="cpu", num_threads=1),
        model_hparams={"probpair_2d": {"alpb_input": True, "hidden_dim": 16}},
        descriptors=descriptors,
        graph_cache=graph_cache,
    )


@pytest.fixture(scope="module")
def model_dir(table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    table_path, descriptors_path, _ = table
    out = tmp_path_factory.mktemp("model") / "probpair_2d_alpb"
    options = _options(descriptors_path, out.parent / "graphs.pt")
    train_final(table_path, "probpair_2d", out, options, progress=False, input_source=SOURCE)
    return out


def _provider(descriptors: pd.DataFrame, calls: list[int] | None = None):
    by_system = descriptors.set_index("system_id")

    def provide(solutes: list[str], solvents: list[str]) -> pd.DataFrame:
        if calls is not None:
            calls.append(len(solutes))
        ids = [system_id_for(a, b) for a, b in zip(solutes, solvents)]
        return by_system.reindex(ids)[[ALPB, "status"]].reset_index(drop=True)

    return provide


def test_the_card_records_the_inputs_and_their_engine(model_dir: Path) -> None:
    card = json.loads((model_dir / "model.json").read_text())
    inputs = card["inputs"]
    assert inputs["names"] == [ALPB]
    assert inputs["pairs"] == 40 and inputs["missing"] == {ALPB: 1}
    assert inputs["qm"] == SOURCE
    assert inputs["descriptors"]["xtb_versions"] == ["6.5.1"]
    assert len(inputs["descriptors"]["sha256"]) == 64
    assert card["hparams"]["alpb_input"] is True


def test_train_refuses_a_table_of_another_engine_or_unknown_provenance(table, tmp_path) -> None:
    table_path, descriptors_path, descriptors = table
    options = _options(descriptors_path, tmp_path / "graphs.pt")
    with pytest.raises(UserError, match="records how prediction computes it"):
        train_final(table_path, "probpair_2d", tmp_path / "a", options, progress=False)
    other = SOURCE | {"engine_tag": "xtb-ffffffff"}
    with pytest.raises(UserError, match="engine tag.*xtb-0123abcd.*xtb-ffffffff"):
        train_final(
            table_path, "probpair_2d", tmp_path / "b", options, progress=False, input_source=other
        )
    old = tmp_path / "old.parquet"
    descriptors.drop(columns="engine_tag").to_parquet(old, index=False)
    with pytest.raises(UserError, match="no engine_tag column"):
        train_final(
            table_path,
            "probpair_2d",
            tmp_path / "c",
            _options(old, tmp_path / "graphs.pt"),
            progress=False,
            input_source=SOURCE,
        )


def test_prediction_feeds_the_inputs_as_training_did(model_dir: Path, table) -> None:
    _, _, descriptors = table
    with pytest.raises(UserError, match="give load_model the function that computes them"):
        load_model(model_dir)
    calls: list[int] = []
    model = load_model(model_dir, inputs=_provider(descriptors, calls))
    holdout = pd.read_parquet(model_dir / HOLDOUT_FILE)
    pairs = freesolv_rows(40).set_index("pair_id").loc[holdout["pair_id"]]
    predicted = model.predict(list(pairs.solute_smiles), list(pairs.solvent_smiles))
    assert calls == [len(pairs)]  # one call per predict, for the pairs that parse
    np.testing.assert_allclose(predicted[TARGET], holdout["y_pred"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predicted[f"{TARGET}_sigma"], holdout["y_std"], rtol=1e-5)
    expected = descriptors.set_index("solute_smiles").loc[pairs.solute_smiles, ALPB]
    np.testing.assert_allclose(predicted[ALPB], expected.to_numpy())


def test_an_input_moves_only_its_own_pair_and_a_rare_gap_is_an_extrapolation(
    model_dir: Path, table
) -> None:
    _, _, descriptors = table
    solutes = list(descriptors.solute_smiles[4:9])  # pair 3 has no value
    base = load_model(model_dir, inputs=_provider(descriptors)).predict(solutes, ["O"] * 5)
    assert (base["input_note"] == "").all() and not base["extrapolation"].any()
    shifted = descriptors.copy()
    shifted.loc[5, ALPB] -= 5.0
    shifted.loc[6, [ALPB, "status"]] = [np.nan, "unparametrized"]
    moved = load_model(model_dir, inputs=_provider(shifted)).predict(solutes, ["O"] * 5)
    changed = ~np.isclose(moved[TARGET], base[TARGET], rtol=0, atol=1e-6)
    assert list(changed) == [False, True, True, False, False]
    note = moved.loc[2, "input_note"]
    assert note.startswith(f"no {ALPB} (unparametrized)") and "1 of 40 training pairs" in note
    assert moved.loc[2, "extrapolation"] and note in moved.loc[2, "applicability"]
    # a row that does not parse is rejected before any input is computed
    calls: list[int] = []
    frame = load_model(model_dir, inputs=_provider(descriptors, calls)).predict(
        ["not a smiles", solutes[0]], ["O", "O"]
    )
    assert list(frame["status"]) == ["rejected", "ok"] and calls == [1]
    assert np.isnan(frame.loc[0, ALPB]) and frame.loc[1, ALPB] == descriptors.loc[4, ALPB]


def test_alpb_end_to_end_with_the_real_program(tmp_path: Path, xtb_program: str, capsys) -> None:
    """`solvation` → `train` → `predict`: prediction recomputes a training pair's ALPB value (a
    fresh solvation cache: xtb runs again on the engine's cached geometry) equal to the table's,
    computes a new molecule, and notes a solvent xtb has no parameters for."""
    pairs = freesolv_rows(12)
    pairs_dir = tmp_path / "pairs"
    write_pair_table(pairs, pairs_dir / "freesolv" / f"{TARGET}.parquet")
    config = tmp_path / "config.yaml"
    config.write_text("engine:\n  xtb:\n    timeout_s: 120\n")
    caches = ["--parts-cache", str(tmp_path / "parts")]
    descriptors = tmp_path / "alpb.parquet"
    common = ["--config", str(config), "--no-progress"]
    solvation = ["solvation", *common, "--dataset", "freesolv", "--pairs-dir", str(pairs_dir)]
    solvation += [*caches, "--solvation-cache", str(tmp_path / "s1"), "--out", str(descriptors)]
    assert main(solvation) == 0
    table = pd.read_parquet(descriptors)
    assert (table["status"] == "ok").all() and set(table["engine_tag"]) == {table.engine_tag[0]}
    out = tmp_path / "model"
    train = ["train", *common, "--pairs", str(pairs_dir / "freesolv" / f"{TARGET}.parquet")]
    train += ["--model", "probpair_2d", "--hparams", '{"alpb_input": true}']
    train += ["--descriptors", str(descriptors), "--out-dir", str(out), "--epochs", "2"]
    train += ["--batch-size", "8", "--hidden-dim", "16", "--threads", "1"]
    train += ["--graph-cache", str(tmp_path / "graphs.pt")]
    assert main(train) == 0
    capsys.readouterr()

    def predict(solute: str, solvent: str, *extra: str) -> tuple[int, str]:
        argv = ["predict", "--model-dir", str(out), "--solute", solute, "--solvent", solvent]
        argv += [*caches, "--solvation-cache", str(tmp_path / "s2"), "--no-progress", *extra]
        code = main(argv)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    first = table.iloc[0]
    code, text = predict(first.solute_smiles, "O", "--json")
    row = json.loads(text)
    assert code == 0 and row["status"] == "ok" and row["input_note"] == ""
    assert row[ALPB] == pytest.approx(first[ALPB], abs=1e-6)  # recomputed, not read back
    assert any((tmp_path / "s2").rglob("*.json"))
    code, text = predict("CCCCO", "O")  # butanol: not in the table, computed now
    assert code == 0 and f"input {ALPB} = " in text
    code, text = predict("CCO", "CCCCCCCCCCCC", "--json")  # dodecane: no ALPB parameters
    row = json.loads(text)
    assert code == 0 and row[ALPB] is None and "unparametrized" in row["input_note"]
    assert row["extrapolation"] and "0 of 12 training pairs" in row["applicability"]
    code, text = predict("CCO", "O", "--xtb", str(tmp_path / "no-xtb"))
    assert code == 2 and "the xtb program was not found" in text
