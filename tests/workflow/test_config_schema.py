"""A wrong config key or value fails before any job runs, naming the key; the workflow and the CLI
stages read the same schema and fill the same defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from workflow_helpers import (
    REPO_ROOT,
    freesolv_subset,
    run_snakemake,
    small_qm_config,
    write_config,
)

from pairfactory.config import SCHEMA_PATH, load_config
from pairfactory.errors import UserError


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    freesolv_subset(tmp_path / "raw" / "freesolv.txt", 20)
    return tmp_path


def _assert_failed_before_any_job(
    workdir: Path, run_output: str, returncode: int, *needles: str
) -> None:
    assert returncode != 0, run_output[-3000:]
    for needle in needles:
        assert needle in run_output, f"{needle!r} not in:\n{run_output[-3000:]}"
    # no job ran: no pair table, no log of a job
    assert not (workdir / "results" / "pairs").exists()
    assert not (workdir / "results" / "logs").exists()


@pytest.mark.parametrize(
    ("section", "values", "needles"),
    [
        # a misspelt key deep down is named with its place
        (
            "qm",
            {"datasets": {"freesolv": {"max_sytems": 3}}},
            ["max_sytems", "['qm']['datasets']['freesolv']"],
        ),
        ("engine", {"name": "gaussian"}, ["gaussian", "['engine']['name']"]),
        ("samples", {"per_system": "8"}, ["per_system", "not of type 'integer'"]),
    ],
)
def test_schema_rejects_a_wrong_key_or_value_naming_it(
    workdir: Path, section: str, values: dict, needles: list[str]
) -> None:
    write_config(workdir, small_qm_config(**{section: values}))
    run = run_snakemake(workdir, "-n", "--cores", "1")
    _assert_failed_before_any_job(workdir, run.output, run.returncode, *needles)


def test_unknown_top_level_section_is_rejected(workdir: Path) -> None:
    config = small_qm_config()
    config["qm_settings"] = {"threads": 2}
    write_config(workdir, config)
    run = run_snakemake(workdir, "-n", "--cores", "1")
    _assert_failed_before_any_job(workdir, run.output, run.returncode, "qm_settings")


def test_qm_dataset_must_be_curated(workdir: Path) -> None:
    write_config(workdir, small_qm_config(qm={"datasets": {"freesolv": {}, "mnsol": {}}}))
    run = run_snakemake(workdir, "-n", "--cores", "1")
    _assert_failed_before_any_job(workdir, run.output, run.returncode, "qm.datasets.mnsol")


@pytest.mark.parametrize(
    ("final_models", "needle"),
    [
        ([{"table": "mnsol/dg_solv_kcal_mol", "model": "cigin"}], "'mnsol' is not in datasets"),
        ([{"table": "freesolv/dg_hydration_kcal_mol", "model": "cigin"}] * 2, "twice"),
        ([{"table": "freesolv/dg_hydration_kcal_mol", "model": "gpt"}], "'gpt' is not one of"),
    ],
)
def test_a_wrong_final_model_is_named(workdir: Path, final_models: list, needle: str) -> None:
    write_config(workdir, small_qm_config(final_models=final_models))
    run = run_snakemake(workdir, "-n", "--cores", "1")
    _assert_failed_before_any_job(workdir, run.output, run.returncode, needle)


@pytest.mark.parametrize("where", ["evaluate", "table", "final_model"])
def test_a_model_that_reads_alpb_gets_the_descriptor_table(workdir: Path, where: str) -> None:
    """alpb_input set for the model (evaluate.model_hparams), or for the model on this table
    (evaluate.table_hparams): its folds and its final model read the table; or for one final
    model only (its entry's hparams: passed to its `pairfactory train` call, which alone reads
    the table)."""
    table = "freesolv/dg_hydration_kcal_mol"
    own = {"alpb_input": True, "contact_head": "bilinear"}
    evaluate: dict = {"tables": [table], "models": ["probpair_2d"]}
    entry: dict = {"table": table, "model": "probpair_2d"}
    if where == "evaluate":
        evaluate["model_hparams"] = {"probpair_2d": own}
    elif where == "table":
        evaluate["table_hparams"] = {table: {"probpair_2d": own}}
    else:
        entry["hparams"] = own
    write_config(workdir, small_qm_config(evaluate=evaluate, final_models=[entry]))
    planned = run_snakemake(workdir, "-n", "--cores", "1", "--printshellcmds").check()
    counts = planned.job_counts()
    # one descriptor table (a model without samples)
    assert counts.get("solvation") == 1 and counts.get("final_model") == 1, planned.output[-3000:]
    lines = planned.output.splitlines()
    train = [line for line in lines if "pairfactory train" in line]
    assert len(train) == 1 and "--descriptors results/descriptors/freesolv/" in train[0]
    flag = """--hparams '{"alpb_input": true, "contact_head": "bilinear"}'"""
    assert (flag in train[0]) == (where == "final_model")
    folds = [line for line in lines if "pairfactory evaluate" in line]
    assert folds and all(("--descriptors" in line) == (where != "final_model") for line in folds)
    # a table's own hyper-parameters for a table not trained on are a typo: named
    if where == "table":
        evaluate["table_hparams"] = {"freesolv/dg_hydration": {"probpair_2d": own}}
        write_config(workdir, small_qm_config(evaluate=evaluate, final_models=[entry]))
        run = run_snakemake(workdir, "-n", "--cores", "1")
        _assert_failed_before_any_job(
            workdir,
            run.output,
            run.returncode,
            "evaluate.table_hparams names 'freesolv/dg_hydration'",
        )


def test_an_unknown_dataset_name_is_named(workdir: Path) -> None:
    write_config(workdir, small_qm_config(datasets=["freesolv", "qm9"]))
    run = run_snakemake(workdir, "-n", "--cores", "1")
    _assert_failed_before_any_job(
        workdir, run.output, run.returncode, "'qm9', which is neither a built-in dataset"
    )


def test_dataset_without_its_data_path_is_named(workdir: Path) -> None:
    write_config(workdir, small_qm_config(datasets=["freesolv", "combisolv"]))
    run = run_snakemake(workdir, "-n", "--cores", "1")
    _assert_failed_before_any_job(workdir, run.output, run.returncode, "data.combisolv_csv")


def test_missing_raw_file_is_named(workdir: Path) -> None:
    write_config(workdir, small_qm_config(data={"freesolv_txt": "raw/nope.txt"}))
    run = run_snakemake(workdir, "-n", "--cores", "1")
    _assert_failed_before_any_job(
        workdir, run.output, run.returncode, "data.freesolv_txt", "raw/nope.txt"
    )


def test_workflow_and_cli_fill_the_same_defaults(workdir: Path) -> None:
    write_config(workdir, small_qm_config())
    run_snakemake(workdir, "-n", "--cores", "1").check()
    # the workflow hands the stages a snapshot of its effective config ...
    (snapshot,) = (workdir / "results" / "config").glob("config-*.yaml")
    from_workflow = yaml.safe_load(snapshot.read_text())
    # ... which is what pairfactory.config makes of the same file
    assert from_workflow == load_config(workdir / "config.yaml")
    assert from_workflow["engine"]["xtb"]["fmax_ev_per_angstrom"] == 0.05
    assert from_workflow["evaluate"]["folds"] == 5


def test_the_full_config_is_the_same_run_merged_or_replaced() -> None:
    """Snakemake merges --configfile into the embedded default unless told to replace it: every
    key the default sets must be in config/full.yaml, so both ways run the same."""
    from pairfactory.config import deep_merge, validate_config

    default = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    full = yaml.safe_load((REPO_ROOT / "config" / "full.yaml").read_text())
    assert validate_config(deep_merge(default, full)) == validate_config(full)


@pytest.mark.parametrize("path", ["config.yaml", "config/full.yaml"])
def test_shipped_configs_are_valid(path: str) -> None:
    config = load_config(REPO_ROOT / path)
    assert set(config["qm"]["datasets"]) <= set(config["datasets"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        (
            {"qm": {"datasets": {"freesolv": {"max_sytems": 1}}}},
            r"qm\.datasets\.freesolv: .*'max_sytems'",
        ),
        (
            {"shards": {"systems_per_shard": 0}},
            r"shards\.systems_per_shard: 0 is less than the minimum",
        ),
        (
            {"evaluate": {"models": ["attentivefp", "gcn"]}},
            r"evaluate\.models\.1: 'gcn' is not one of",
        ),
        ({"engine": {"xtb": {"fmax": 0.1}}}, r"engine\.xtb: .*'fmax'"),
        # a malformed table name fails here; a well-formed one of no dataset fails in the workflow
        ({"evaluate": {"tables": ["freesolv:dg_solv"]}}, r"evaluate\.tables\.0"),
        ({"evaluate": {"model_hparams": {"gcn": {"beta": 1}}}}, r"evaluate\.model_hparams.*'gcn'"),
        (
            {"evaluate": {"model_hparams": {"cgib": {"beta": [0.1, 0.01]}}}},
            r"evaluate\.model_hparams\.cgib\.beta",
        ),
        ({"evaluate": {"table_hparams": {"mnsol": {"cgib": {"beta": 1}}}}}, r"table_hparams"),
        (
            {"evaluate": {"table_hparams": {"mnsol/dg_solv_kcal_mol": {"gcn": {"beta": 1}}}}},
            r"evaluate\.table_hparams\.mnsol/dg_solv_kcal_mol.*'gcn'",
        ),
    ],
)
def test_load_config_names_the_key(override: dict, pattern: str) -> None:
    # the CLI stages read the same schema: same errors, naming the key
    with pytest.raises(UserError, match=pattern):
        load_config(REPO_ROOT / "config.yaml", override)


def _walk(schema: dict, where: str = "config"):
    yield where, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{where}.{name}")
    for name, sub in schema.get("$defs", {}).items():
        yield from _walk(sub, f"$defs.{name}")


def test_schema_is_closed_and_every_key_has_a_default() -> None:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    for where, node in _walk(schema):
        types = node.get("type")
        if types == "object" or (isinstance(types, list) and "object" in types):
            # closed, or a map whose values have a schema (model hyper-parameters by name)
            assert node.get("additionalProperties") is False or isinstance(
                node.get("additionalProperties"), dict
            ), f"{where} is not closed"
        elif where.startswith("config.") and "$ref" not in node:
            assert "default" in node, f"{where} has no default"


def test_schema_defaults_match_the_stages_settings() -> None:
    """The schema fills the defaults the stages would use themselves (one truth, two places)."""
    from dataclasses import asdict

    from pairfactory.config import validate_config
    from pairfactory.qm.engines.orca import OrcaSettings
    from pairfactory.qm.engines.pyscf import PyscfSettings
    from pairfactory.qm.engines.xtb import XtbSettings
    from pairfactory.qm.samples import SamplingSettings

    config = load_config(REPO_ROOT / "config.yaml")
    defaults = validate_config({})
    assert defaults["engine"]["xtb"] == asdict(XtbSettings())
    assert defaults["engine"]["pyscf"] == asdict(PyscfSettings())
    orca = dict(defaults["engine"]["orca"])
    orca["binary"] = orca.pop("executable")
    assert orca == asdict(OrcaSettings())
    sampling = {k: v for k, v in defaults["samples"].items() if k != "per_system"}
    assert sampling == asdict(SamplingSettings())
    assert config["engine"]["name"] == "xtb"


def test_an_extra_table_of_the_dataset_a_fold_trains_on_is_named(workdir: Path) -> None:
    # its pairs would be the fold's own
    evaluate = {"tables": ["freesolv/dg_hydration_kcal_mol"], "models": ["cigin"]}
    evaluate["extra_pairs"] = {"table": "freesolv/dg_hydration_kcal_mol"}
    write_config(workdir, small_qm_config(evaluate=evaluate))
    run = run_snakemake(workdir, "-n", "--cores", "1")
    _assert_failed_before_any_job(
        workdir, run.output, run.returncode, "extra pairs come from another dataset"
    )


def test_an_extra_pairs_solvent_that_is_no_smiles_is_named(workdir: Path) -> None:
    evaluate = {"tables": [], "models": ["cigin"]}
    evaluate["extra_pairs"] = {"table": "freesolv/dg_hydration_kcal_mol", "solvents": ["water"]}
    write_config(workdir, small_qm_config(evaluate=evaluate))
    run = run_snakemake(workdir, "-n", "--cores", "1")
    _assert_failed_before_any_job(
        workdir, run.output, run.returncode, "evaluate.extra_pairs.solvents lists 'water'"
    )


def test_table_hparams_reach_only_their_tables_jobs(workdir: Path) -> None:
    """Two tables of one dataset, alpb_input set for one of them: only that table's folds and
    final model read the descriptor table; a model that trains on neither table is named."""
    import pandas as pd

    pd.DataFrame(
        {
            "Molecule": ["CCO", "CCCO", "CO", "CCCCO"],
            "Medium": ["O"] * 4,
            "a": [-5.0, -4.8, -5.1, -4.7],
            "b": [1.0, 2.0, 3.0, 4.0],
        }
    ).to_csv(workdir / "mine.csv", index=False)
    mine = {
        "path": "mine.csv",
        "solute_column": "Molecule",
        "solvent_column": "Medium",
        "targets": [
            {"column": "a", "name": "dg_a_kcal_mol", "unit": "kcal/mol"},
            {"column": "b", "name": "dg_b_kcal_mol", "unit": "kcal/mol"},
        ],
    }
    with_alpb, without = "mine/dg_a_kcal_mol", "mine/dg_b_kcal_mol"
    evaluate = {
        "tables": [with_alpb, without],
        "models": ["probpair_2d"],
        "table_hparams": {with_alpb: {"probpair_2d": {"alpb_input": True}}},
    }
    config = small_qm_config(
        datasets=["mine"],
        csv_datasets={"mine": mine},
        qm={"datasets": {}},
        evaluate=evaluate,
        final_models=[{"table": t, "model": "probpair_2d"} for t in (with_alpb, without)],
    )
    write_config(workdir, config)
    planned = run_snakemake(workdir, "-n", "--cores", "1", "--printshellcmds").check()
    jobs = [
        line
        for line in planned.output.splitlines()
        if "pairfactory evaluate" in line or "pairfactory train" in line
    ]
    assert {("dg_a_kcal_mol" in j, "pairfactory train" in j) for j in jobs} == {
        (True, True),
        (True, False),
        (False, True),
        (False, False),
    }, planned.output[-3000:]
    for job in jobs:
        assert ("--descriptors results/descriptors/mine/" in job) == ("dg_a_kcal_mol" in job), job
    config["evaluate"]["table_hparams"] = {without: {"cigin": {"beta": 0.1}}}
    write_config(workdir, config)
    run = run_snakemake(workdir, "-n", "--cores", "1")
    _assert_failed_before_any_job(
        workdir,
        run.output,
        run.returncode,
        "evaluate.table_hparams.mine/dg_b_kcal_mol sets 'cigin'",
    )
