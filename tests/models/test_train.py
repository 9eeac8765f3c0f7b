"""train_model on real pairs: history, best-epoch bookkeeping, early stopping, LR plateau, seeds,
checkpoints."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("dgl")

from pairfactory.errors import UserError  # noqa: E402
from pairfactory.ml.models.layers import ModelOutput, PairModel  # noqa: E402
from pairfactory.ml.splits import random_kfold  # noqa: E402
from pairfactory.ml.train import (  # noqa: E402
    TrainSettings,
    load_weights,
    regression_metrics,
    save_weights,
    train_model,
)

REPO = Path(__file__).resolve().parents[2]


def freesolv_pairs(n: int) -> pd.DataFrame:
    """The first ``n`` FreeSolv compounds (bundled copy) as a pair table with water as solvent."""
    rows = []
    for line in (REPO / "data" / "freesolv" / "database.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = [f.strip() for f in line.split(";")]
        rows.append((fields[1], float(fields[3])))
        if len(rows) == n:
            break
    frame = pd.DataFrame(rows, columns=["solute_smiles", "value"])
    frame["solvent_smiles"] = "O"
    frame["pair_id"] = [hashlib.sha1(s.encode()).hexdigest()[:16] for s in frame["solute_smiles"]]
    frame["dataset"], frame["target"], frame["unit"] = (
        "freesolv",
        "dg_hydration_kcal_mol",
        "kcal/mol",
    )
    return frame


@pytest.fixture(scope="module")
def datasets():
    from pairfactory.ml.datasets import PairGraphDataset
    from pairfactory.ml.graph_cache import GraphCache

    torch.set_num_threads(1)
    table = freesolv_pairs(48)
    split = random_kfold(len(table), n_folds=4, seed=0)[0]
    cache = GraphCache(None)
    return {
        role: PairGraphDataset(table.iloc[idx].reset_index(drop=True), cache)
        for role, idx in (("train", split.train), ("valid", split.valid), ("test", split.test))
    }


def _train(datasets, seed: int, epochs: int = 5, model_name: str = "cigin"):
    from pairfactory.ml.models import build_model
    from pairfactory.ml.train import seed_everything

    settings = TrainSettings(
        max_epochs=epochs, batch_size=12, seed=seed, device="cpu", num_threads=1, patience=50
    )
    seed_everything(seed)
    model = build_model(model_name)
    return model, train_model(
        model, datasets["train"], datasets["valid"], datasets["test"], settings, progress=False
    )


def test_history_best_epoch_and_test_rmse_at_best(datasets):
    _, result = _train(datasets, seed=0, epochs=6)
    hist = result.history_frame()
    assert list(hist["epoch"]) == list(range(1, 7)) and result.epochs_run == 6
    assert set(hist.columns) >= {"epoch", "train_loss", "valid_rmse", "test_rmse", "lr", "seconds"}
    assert np.isfinite(hist[["train_loss", "valid_rmse", "test_rmse"]].to_numpy()).all()
    best = (
        int(hist["valid_rmse"].idxmin()) + 1
    )  # first minimum, as the strict "<" keeps the earlier epoch
    assert result.best_epoch == best
    assert result.test_rmse == hist.loc[best - 1, "test_rmse"]
    assert result.best_valid_rmse == hist.loc[best - 1, "valid_rmse"]
    # predictions come from the best-epoch weights: their test RMSE is the one recorded at that
    # epoch
    preds = result.predictions
    assert preds.groupby("role").size().to_dict() == {
        r: len(datasets[r]) for r in ("train", "valid", "test")
    }
    test = preds[preds["role"] == "test"]
    assert regression_metrics(test["y_true"].to_numpy(), test["y_pred"].to_numpy())[
        "rmse"
    ] == pytest.approx(result.test_rmse, rel=1e-5)
    assert sorted(test["index"]) == list(range(len(datasets["test"])))


def test_history_has_a_column_per_loss_term_summing_to_the_loss(datasets):
    _, plain = _train(datasets, seed=0, epochs=2)
    assert not [c for c in plain.history_frame().columns if c.startswith("loss_")]
    _, result = _train(datasets, seed=0, epochs=2, model_name="probpair")
    hist = result.history_frame()
    terms = ["loss_main", "loss_contact", "loss_contrastive", "loss_aux", "loss_kl"]
    assert [c for c in hist.columns if c.startswith("loss_")] == terms
    np.testing.assert_allclose(hist[terms].sum(axis=1), hist["train_loss"], rtol=1e-5)
    # no samples here: the sample terms are exactly 0, the main term and the KL are not
    assert (hist[["loss_contact", "loss_contrastive", "loss_aux"]] == 0).all().all()
    assert (hist["loss_main"] != 0).all() and (hist["loss_kl"] > 0).all()


def test_same_seed_same_numbers_bit_for_bit(datasets):
    _, first = _train(datasets, seed=7, epochs=3)
    _, second = _train(datasets, seed=7, epochs=3)
    cols = ["train_loss", "valid_rmse", "test_rmse", "lr"]
    assert first.history_frame()[cols].equals(second.history_frame()[cols])
    for key, value in first.best_state_dict.items():
        assert torch.equal(value, second.best_state_dict[key]), key
    _, other = _train(datasets, seed=8, epochs=3)
    assert not first.history_frame()[cols].equals(other.history_frame()[cols])


class ConstantModel(PairModel):
    """Predicts a constant whatever its weights: the validation loss never improves after epoch
    1."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.hparams = {}

    def forward(self, solute, solvent):
        n = solute.batch_size
        prediction = torch.full((n,), -3.0) + 0.0 * self.w
        return ModelOutput(prediction=prediction, aux_loss=torch.zeros(()))


def test_early_stopping_and_lr_plateau(datasets):
    settings = TrainSettings(
        max_epochs=40, patience=4, lr_patience=1, lr_factor=0.5, batch_size=16, device="cpu", seed=0
    )
    result = train_model(
        ConstantModel(),
        datasets["train"],
        datasets["valid"],
        datasets["test"],
        settings,
        progress=False,
    )
    assert result.best_epoch == 1 and result.stopped_early
    assert result.epochs_run == 1 + settings.patience
    lrs = result.history_frame()["lr"].tolist()
    # ReduceLROnPlateau(patience=1): halved after every second epoch without improvement
    assert lrs[0] == lrs[1] == lrs[2] == pytest.approx(1e-3) and lrs[3] == pytest.approx(5e-4)


def test_checkpoint_roundtrip_weights_only(datasets, tmp_path):
    from pairfactory.ml.models import build_model

    model, result = _train(datasets, seed=1, epochs=2)
    path = save_weights(result.best_state_dict, tmp_path / "ckpt" / "model.pt")
    fresh = build_model("cigin")
    load_weights(fresh, path)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, result.best_state_dict[key])
    assert torch.load(path, weights_only=True).keys() == result.best_state_dict.keys()
    with pytest.raises(UserError, match="does not fit this model"):
        load_weights(build_model("attentivefp"), path)
    with pytest.raises(UserError, match="does not exist"):
        load_weights(fresh, tmp_path / "missing.pt")


def test_settings_and_metrics_validation():
    with pytest.raises(UserError, match="lr must be a positive number"):
        TrainSettings(lr=0)
    with pytest.raises(UserError, match="device must be one of"):
        TrainSettings(device="tpu")
    assert TrainSettings.from_mapping({"max_epochs": 7, "unknown": 1, "lr": None}).max_epochs == 7
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert m["rmse"] == pytest.approx(np.sqrt(4 / 3)) and m["mae"] == pytest.approx(2 / 3)
    assert m["r2"] == pytest.approx(1 - 4 / 2)


def test_empty_split_is_an_error(datasets):
    settings = TrainSettings(max_epochs=1, device="cpu")
    with pytest.raises(UserError, match="valid set is empty"):
        train_model(
            ConstantModel(), datasets["train"], [], datasets["test"], settings, progress=False
        )


def test_standardized_targets_are_mapped_back_to_the_targets_units(datasets):
    """Shifted far from zero (like absorption maxima in nm), a briefly trained model predicts
    around the training mean only when the targets are standardized; the metrics are in the
    targets' units."""
    from pairfactory.ml.datasets import PairGraphDataset
    from pairfactory.ml.models import build_model
    from pairfactory.ml.train import TargetScale, seed_everything

    shifted = {}
    for role, ds in datasets.items():
        frame = ds.pairs_df.copy()
        frame["value"] = frame["value"] + 500.0
        shifted[role] = PairGraphDataset(frame, ds.cache)
    train_y = shifted["train"].pairs_df["value"].to_numpy()
    results = {}
    for standardize in (False, True):
        seed_everything(0)
        model = build_model("cigin", hidden_dim=16)
        settings = TrainSettings(
            max_epochs=3, batch_size=8, seed=0, device="cpu", standardize_targets=standardize
        )
        results[standardize] = train_model(
            model, shifted["train"], shifted["valid"], shifted["test"], settings
        )
    scaled = results[True]
    assert scaled.target_scale.mean == pytest.approx(train_y.mean())
    assert scaled.target_scale.std == pytest.approx(train_y.std(), rel=1e-5)
    assert results[False].target_scale == TargetScale()
    test = scaled.predictions[scaled.predictions["role"] == "test"]
    assert test["y_true"].mean() == pytest.approx(500 + datasets["test"].pairs_df["value"].mean())
    assert abs(test["y_pred"].mean() - train_y.mean()) < 10  # in kcal/mol around 500, not around 0
    assert scaled.test_rmse < 0.1 * results[False].test_rmse
    assert TargetScale.fit(np.array([2.0, 2.0])) == TargetScale(mean=2.0, std=1.0)
