"""`pairfactory report` on result folders produced by real tiny evaluate runs."""

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
from pairfactory.ml.evaluate import ProtocolOptions, run_protocol  # noqa: E402
from pairfactory.ml.report import collect_metrics, write_report  # noqa: E402
from pairfactory.ml.train import TrainSettings  # noqa: E402


@pytest.fixture(scope="module")
def results_root(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("report")
    table = tmp / "pairs.parquet"
    write_pair_table(freesolv_rows(30, dataset="freesolv_cgib"), table)
    options = ProtocolOptions(
        settings=TrainSettings(max_epochs=2, batch_size=8, device="cpu"),
        n_folds=3,
        graph_cache=tmp / "gc.pt",
    )
    for model in ("attentivefp", "cigin"):
        run_protocol(
            table,
            model,
            "random",
            tmp / "evaluate",
            options,
            repeats=1,
            folds=[0, 1],
            progress=False,
        )
    return tmp / "evaluate"


def test_report_tables_and_plots(results_root, tmp_path):
    out = tmp_path / "report"
    assert main(["report", "--results", str(results_root), "--out-dir", str(out)]) == 0
    csv = pd.read_csv(out / "results.csv")
    assert sorted(csv["model"]) == ["attentivefp", "cigin"]
    metrics = collect_metrics(results_root)
    for row in csv.itertuples():
        folds = metrics[metrics["model"] == row.model]["rmse"].to_numpy()
        assert row.n_folds == 2
        assert row.rmse_mean == pytest.approx(folds.mean())
        assert row.rmse_std == pytest.approx(folds.std())
        assert row.published_rmse == {"attentivefp": 1.05, "cigin": 0.91}[row.model]
        assert row.project_target_rmse == 0.80
    md = (out / "results.md").read_text()
    for row in csv.itertuples():
        line = next(line for line in md.splitlines() if f"| {row.model} |" in line)
        assert f"{row.rmse_mean:.3f} ({row.rmse_std:.3f})" in line
        assert f"{row.published_rmse:.2f}" in line
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    base = "plots/freesolv_cgib/dg_hydration_kcal_mol/random"
    assert pngs == [
        f"{base}/{m}_{k}.png" for m in ("attentivefp", "cigin") for k in ("learning", "parity")
    ]
    for png in out.rglob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_report_errors(tmp_path, results_root):
    with pytest.raises(UserError, match="does not exist"):
        write_report(tmp_path / "nothing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no metrics.json"):
        write_report(tmp_path / "empty", tmp_path / "out")
    broken = tmp_path / "broken" / "x"
    broken.mkdir(parents=True)
    (broken / "metrics.json").write_text(json.dumps({"rmse": 1.0}))
    with pytest.raises(UserError, match="missing key"):
        write_report(tmp_path / "broken", tmp_path / "out")
    assert np.isfinite(collect_metrics(results_root)["rmse"]).all()


def _copy_run(src: Path, name: str, edit) -> Path:
    """A copy of a model's result folder beside it, every fold's metrics.json passed through
    ``edit`` (as if that run had been trained otherwise)."""
    import shutil

    copy = src.parent / name
    shutil.copytree(src, copy)
    for path in copy.rglob("metrics.json"):
        record = json.loads(path.read_text())
        edit(record)
        path.write_text(json.dumps(record))
    return copy


def test_folds_with_other_hyper_parameters_are_their_own_row(results_root, tmp_path):
    import shutil

    # a copy of the cigin folds, as if trained with 3 message-passing steps (the published CIGIN
    # has 6)
    root = tmp_path / "evaluate"
    shutil.copytree(results_root, root)
    src = root / "freesolv_cgib" / "dg_hydration_kcal_mol" / "cigin"

    def three_steps(record: dict) -> None:
        record["hparams"]["message_passing_steps"] = 3
        record["rmse"] += 1.0

    _copy_run(src, "cigin-mp3", three_steps)
    _copy_run(
        src, "cigin-scaled", lambda record: record["settings"].update(standardize_targets=True)
    )
    summary = write_report(root, tmp_path / "report", plots=False)["summary"]
    rows = summary.set_index("model")
    assert sorted(rows.index) == [
        "attentivefp",
        "cigin",
        "cigin@message_passing_steps=3",
        "cigin@standardize_targets=true",
    ]
    assert rows.loc["cigin@message_passing_steps=3", "rmse_mean"] == pytest.approx(
        rows.loc["cigin", "rmse_mean"] + 1.0
    )
    assert rows.loc["cigin@message_passing_steps=3", "published_rmse"] == 0.91
    assert (
        "published setting: cigin defaults"
        in rows.loc["cigin@message_passing_steps=3", "published_note"]
    )


def test_non_default_hparams_follow_the_recorded_sizes():
    from pairfactory.ml.tune import non_default_hparams

    recorded = {
        "node_in": 51,
        "edge_in": 11,
        "hidden_dim": 51,
        "edge_hidden_dim": 11,
        "beta": 1.0,
        "contrastive": False,
    }
    assert non_default_hparams("cgib", recorded) == {}
    assert non_default_hparams("cgib", recorded | {"hidden_dim": 32, "beta": 0.01}) == {
        "hidden_dim": 32,
        "beta": 0.01,
    }
    assert non_default_hparams("attentivefp", {"head_hidden": [256, 128], "node_in": 51}) == {}


def test_settings_of_a_switched_off_part_make_no_variant():
    from pairfactory.ml.tune import non_default_hparams

    # the rank of the bilinear contact head means nothing to the cosine head (the default)
    assert non_default_hparams("probpair", {"contact_rank": 8}) == {}
    assert non_default_hparams("probpair", {"contact_head": "bilinear", "contact_rank": 8}) == {
        "contact_head": "bilinear",
        "contact_rank": 8,
    }
    # no contact term (the twin fixes its weight to 0): no contact head of either kind
    assert non_default_hparams("probpair_2d", {"contact_head": "bilinear", "contact_rank": 8}) == {}
    assert non_default_hparams(
        "probpair", {"contact_weight": 0.0, "contact_head": "bilinear", "tau": 0.5}
    ) == {"contact_weight": 0.0, "tau": 0.5}
    assert non_default_hparams("probpair", {"contrastive_weight": 0.0, "tau": 0.5}) == {
        "contrastive_weight": 0.0
    }
    assert non_default_hparams("probpair", {"probabilistic": False, "nll_beta": 0.5}) == {
        "probabilistic": False
    }
    assert non_default_hparams("probpair", {"nll_beta": 0.5}) == {"nll_beta": 0.5}


def test_ablation_compares_folds_trained_alike_whatever_they_recorded():
    from pairfactory.ml.report import _training_key

    recorded = {"lr": 0.001, "batch_size": 32, "seed": 0, "num_threads": 1, "eval_batch_size": 64}
    # where and how fast it ran, and what the fold left unrecorded (its default), change nothing
    assert _training_key(recorded) == _training_key(
        recorded | {"seed": 3, "num_threads": 2, "eval_batch_size": 512, "device": "cuda"}
    )
    assert _training_key(recorded) == _training_key(
        recorded | {"max_epochs": TrainSettings().max_epochs}
    )
    # each model at its own batch size and learning rate (chosen on validation) is compared
    assert _training_key(recorded) == _training_key(recorded | {"lr": 0.0003, "batch_size": 64})
    assert _training_key(recorded) != _training_key(recorded | {"max_epochs": 50})
    # recorded as 0 by one version and as 0.0 by another: the same setting
    assert _training_key(recorded | {"weight_decay": 0}) == _training_key(
        recorded | {"weight_decay": 0.0}
    )
    assert _training_key(recorded) != _training_key(recorded | {"standardize_targets": True})


def test_what_a_fold_learned_from_is_in_its_label():
    from pairfactory.ml.report import _variant_settings

    def fold(model: str, samples) -> dict:
        return {"model": model, "hparams": {}, "samples": samples}

    recorded = {"settings": {"max_samples_per_pair": None}, "descriptors": "alpb.parquet"}
    assert _variant_settings(fold("probpair", recorded)) == {}
    # trained without shards: the twin in all but name, never averaged with the real thing
    assert _variant_settings(fold("probpair", None)) == {"samples": False}
    other_qc = {"settings": {"qc": {"mad_factor": 3.0, "min_excess_kcal_mol": 10.0}}}
    assert _variant_settings(fold("probpair", other_qc)) == {"qc.mad_factor": 3.0}
    capped = {"settings": {"max_samples_per_pair": 2}}
    assert _variant_settings(fold("probpair", capped)) == {"max_samples_per_pair": 2}
    # the twin learns nothing from samples: the sample settings of its run do not split it
    assert _variant_settings(fold("probpair_2d", capped)) == {}
    assert _variant_settings(fold("probpair_2d", None)) == {}


def test_folds_with_and_without_descriptors_are_told_apart_where_they_mix():
    from pairfactory.ml.report import _label_variants

    def fold(k: int, descriptors: str | None, model: str = "probpair") -> dict:
        return {
            "dataset": "d",
            "target": "t",
            "split": "random",
            "model": model,
            "fold": k,
            "hparams": {},
            "settings": {},
            "samples": {"settings": {}, "descriptors": descriptors},
        }

    alike = [fold(0, None), fold(1, None), fold(0, None, "probpair_2d")]
    _label_variants(alike)
    assert [r["model"] for r in alike] == ["probpair", "probpair", "probpair_2d"]
    mixed = [fold(0, "alpb.parquet"), fold(0, None), fold(1, None, "probpair_2d")]
    _label_variants(mixed)
    assert [r["model"] for r in mixed] == [
        "probpair@descriptors=true",
        "probpair@descriptors=false",
        "probpair_2d",  # the twin never reads them
    ]


def test_ablation_pairs_folds_of_the_same_splits_only():
    from pairfactory.ml.report import ablation_table

    def folds(model: str, seed: int, rmse: float, path: str) -> list[dict]:
        return [
            {
                "dataset": "d",
                "target": "t",
                "split": "random",
                "model": model,
                "base_model": model,
                "repeat": 0,
                "fold": k,
                "n_folds": 3,
                "n_train": 80,
                "n_valid": 10,
                "n_test": 10,
                "rmse": rmse + 0.1 * k,
                "settings": {"seed": seed, "lr": 0.001},
                "path": f"{path}/r0-f{k}",
            }
            for k in range(3)
        ]

    twin, ours = folds("probpair_2d", 0, 1.0, "a"), folds("probpair", 0, 0.9, "b")
    table = ablation_table(pd.DataFrame(twin + ours))
    assert list(table["variant"]) == ["probpair"] and table["folds"].iloc[0] == 3
    assert table["difference"].iloc[0] == pytest.approx(-0.1)
    # other split seeds mean other test sets: nothing to pair
    assert ablation_table(pd.DataFrame(twin + folds("probpair", 7, 0.9, "b"))).empty
    # a split that does not depend on the seed (scaffold: split_seed None) pairs across seeds
    unseeded = [
        dict(r, split_seed=None, split="scaffold") for r in twin + folds("probpair", 7, 0.9, "b")
    ]
    assert len(ablation_table(pd.DataFrame(unseeded))) == 1
    # the same run read twice is refused, not paired fold by fold with itself
    with pytest.raises(UserError, match="more than one fold 0 of repeat 0") as refused:
        ablation_table(pd.DataFrame(twin + ours + folds("probpair", 0, 0.9, "c")))
    assert "(b/r0-f0, c/r0-f0)" in str(refused.value)  # the copies themselves, nothing else


def _ablation_folds(
    model: str, rmse: float, repeats: int = 3, hparams: dict | None = None, **settings
) -> list[dict]:
    """Folds of a 3 x 3 protocol as evaluate records them (split seed = seed + repeat)."""
    ensemble = settings.pop("ensemble", 1)
    return [
        {
            "dataset": "d",
            "target": "t",
            "unit": "kcal/mol",
            "split": "random",
            "model": model,
            "base_model": model,
            "hparams": dict(hparams or {}),
            "repeat": r,
            "fold": k,
            "n_folds": 3,
            "split_seed": r,
            "n_train": 80,
            "n_valid": 10,
            "n_test": 10,
            "rmse": rmse + 0.1 * k + 0.01 * r + 0.003 * (k * r % 2),
            "mae": 0.5,
            "r2": 0.9,
            "settings": {"seed": r, "lr": 0.001} | settings,
            "ensemble": ensemble,
            "samples": {"settings": {}},
            "path": f"{model}{hparams}{settings}/r{r}-f{k}",
        }
        for r in range(repeats)
        for k in range(3)
    ]


def test_ablation_pairs_every_repeat_and_the_twin_trained_alike():
    from pairfactory.ml.report import _label_variants, ablation_table

    records = (
        _ablation_folds("probpair_2d", 1.0)
        + _ablation_folds("probpair", 0.9, lr=0.0003)  # at its own learning rate
        + _ablation_folds("probpair", 0.95, hparams={"contact_weight": 0.0})
        + _ablation_folds("probpair_2d", 0.8, hparams={"alpb_input": True})
        + _ablation_folds("probpair", 0.7, hparams={"alpb_input": True})
        + _ablation_folds("probpair", 0.6, ensemble=5)  # no twin ensemble: not compared
        + _ablation_folds("probpair", 0.85, hparams={"beta": 0.0})  # no twin at beta 0
    )
    _label_variants(records)
    table = ablation_table(pd.DataFrame(records)).set_index("variant")
    # one contrast over the 9 folds of the 3 repeats, not one per repeat
    assert table.loc["probpair", "folds"] == 9 and len(table) == 5
    assert table.loc["probpair", "reference"] == "probpair_2d"
    assert table.loc["probpair", "training_differs"] == "lr 0.0003 / 0.001"
    assert table.loc["probpair", "difference"] == pytest.approx(-0.1)
    # a part switched off: against the plain twin, trained alike
    assert table.loc["probpair@contact_weight=0.0", "reference"] == "probpair_2d"
    assert table.loc["probpair@contact_weight=0.0", "training_differs"] == ""
    # the samples with the ALPB input: against the twin with the same input
    assert table.loc["probpair@alpb_input=true", "reference"] == "probpair_2d@alpb_input=true"
    assert table.loc["probpair@alpb_input=true", "difference"] == pytest.approx(-0.1)
    # and what the input does to the twin: against the plain twin
    assert table.loc["probpair_2d@alpb_input=true", "reference"] == "probpair_2d"
    # a part the twin shares, switched, with no such twin run: against the plain twin
    assert table.loc["probpair@beta=0.0", "reference"] == "probpair_2d"
    assert table.attrs["unmatched"] == ["d/t random: probpair@ensemble=5"]


def test_ablation_reads_folds_of_older_versions_beside_new_ones():
    """Keys an older fold did not record are NaN in a frame with newer folds: read as unrecorded
    (no ensemble: 1; no split seed: the model seed less the repeat), never as a value."""
    from pairfactory.ml.report import _label_variants, ablation_table

    def old(model: str, rmse: float, seed: int) -> list[dict]:
        folds = _ablation_folds(model, rmse, repeats=1)
        for fold in folds:
            del fold["ensemble"], fold["split_seed"]
            fold["settings"]["seed"] = seed
        return folds

    records = old("probpair_2d", 1.0, 0) + old("probpair", 0.9, 5) + _ablation_folds("cigin", 1.0)
    _label_variants(records)
    table = ablation_table(pd.DataFrame(records))
    # split with other seeds: other test sets, nothing to pair
    assert table.empty and table.attrs["unmatched"] == ["d/t random: probpair"]
    records = old("probpair_2d", 1.0, 0) + old("probpair", 0.9, 0) + _ablation_folds("cigin", 1.0)
    _label_variants(records)
    assert list(ablation_table(pd.DataFrame(records))["folds"]) == [3]


def test_report_shows_uncertainty_and_coverage(tmp_path):
    from pairfactory.ml.report import aggregate, quality_markdown

    folds = _ablation_folds("probpair", 0.9, repeats=1) + _ablation_folds("cigin", 1.0, repeats=1)
    for k, fold in enumerate(folds[:3]):
        fold |= {"nll": 1.0 + k, "coverage_68": 0.7, "rmse_test_covered": 0.8, "n_test_covered": 4}
        fold |= {"rmse_test_uncovered": None if k == 0 else 1.2}
    summary = aggregate(pd.DataFrame(folds)).set_index("model")
    assert summary.loc["probpair", "nll_mean"] == pytest.approx(2.0)
    assert summary.loc["probpair", "rmse_test_uncovered_mean"] == pytest.approx(1.2)  # 2 folds
    assert np.isnan(summary.loc["cigin", "nll_mean"])
    table = quality_markdown(summary.reset_index())
    assert "| probpair | 3 | 2.000 | – | 0.70 / – | – | 0.800 (4) | 1.200 |" in table
    assert "cigin" not in table  # nothing of it to show


def test_a_repeat_still_running_is_flagged():
    from pairfactory.ml.report import aggregate, markdown_table

    folds = _ablation_folds("cigin", 1.0, repeats=2)[:4]  # repeat 1 has 1 of its 3 folds
    assert "| 4 of 6 (2 rep.) |" in markdown_table(aggregate(pd.DataFrame(folds)))
    # an ensemble fold's best epoch is its first member's, and says so
    ensemble = [
        dict(fold, ensemble=5, best_epoch=6, settings=fold["settings"] | {"max_epochs": 9})
        for fold in folds
    ]
    assert "| 6 (9), member 0 |" in markdown_table(aggregate(pd.DataFrame(ensemble)))
    assert "| 6 (2 rep.) |" in markdown_table(
        aggregate(pd.DataFrame(_ablation_folds("cigin", 1.0, repeats=2)))
    )


def test_out_is_the_old_name_of_out_dir():
    import argparse

    from pairfactory.cli.report import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).out_dir == Path("results/report")
    for flag in ("--out-dir", "--out"):
        assert parser.parse_args([flag, "y"]).out_dir == Path("y")


def test_folds_trained_with_other_settings_are_told_apart_only_where_they_mix(
    results_root, tmp_path
):
    import shutil

    # a second run of cigin at another learning rate and batch size, in its own folder
    root = tmp_path / "evaluate"
    shutil.copytree(results_root, root)
    src = root / "freesolv_cgib" / "dg_hydration_kcal_mol" / "cigin"

    def slower(record: dict) -> None:
        record["settings"].update(lr=0.0003, batch_size=32)
        record["rmse"] += 1.0

    slow = _copy_run(src, "cigin-slow", slower)
    rows = write_report(root, tmp_path / "report", plots=False)["summary"].set_index("model")
    assert sorted(rows.index) == [
        "attentivefp",  # trained alike in every fold: its label stays short
        "cigin@batch_size=32,lr=0.0003",
        "cigin@batch_size=8,lr=0.001",
    ]
    assert (rows["n_folds"] == 2).all()
    assert rows.loc["cigin@batch_size=32,lr=0.0003", "rmse_mean"] == pytest.approx(
        rows.loc["cigin@batch_size=8,lr=0.001", "rmse_mean"] + 1.0
    )
    # the same two runs in two result folders, read as one: still told apart
    other = tmp_path / "other" / "freesolv_cgib" / "dg_hydration_kcal_mol"
    other.mkdir(parents=True)
    shutil.move(slow, other / "cigin")
    labels = collect_metrics([root, tmp_path / "other"]).groupby("model").size()
    assert labels.to_dict() == {
        "attentivefp": 2,
        "cigin@batch_size=32,lr=0.0003": 2,
        "cigin@batch_size=8,lr=0.001": 2,
    }


def test_folds_with_sigma_calibrated_two_ways_are_two_rows(results_root, tmp_path):
    """Folds from before σ grew with novelty (no novelty_sigma) and after: their NLL and
    coverage do not average, so each is its own row; alone, a run keeps its short label."""
    import shutil

    root = tmp_path / "evaluate"
    shutil.copytree(results_root, root)
    src = root / "freesolv_cgib" / "dg_hydration_kcal_mol" / "cigin"
    for path in src.rglob("metrics.json"):  # as if cigin were an ensemble with a σ
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "sigma_scale": 1.2, "nll": 1.0}))
    alone = write_report(root, tmp_path / "alone", plots=False)["summary"]
    assert sorted(alone["model"]) == ["attentivefp", "cigin"]
    _copy_run(src, "cigin-novelty", lambda record: record.update(novelty_sigma=0.5, nll=0.8))
    rows = write_report(root, tmp_path / "report", plots=False)["summary"].set_index("model")
    assert sorted(rows.index) == [
        "attentivefp",
        "cigin@calibration=novelty",
        "cigin@calibration=scale",
    ]
    assert rows.loc["cigin@calibration=novelty", "nll_mean"] == pytest.approx(0.8)
    assert rows.loc["cigin@calibration=scale", "nll_mean"] == pytest.approx(1.0)
