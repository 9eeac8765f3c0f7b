# Helpers shared by the rules: config checks that span several keys, the dataset/target table, the
# shard plan read at DAG time, and the lists of final outputs. No chemistry here: rules call the
# `pairfactory` CLI, and the plan comes from the light `pairfactory.qm.plan` module.

import hashlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.iocontainers import Wildcards
from snakemake.utils import min_version

min_version("9.0")

# Jobs call the `pairfactory` entry point of the environment Snakemake itself runs in, even when
# that environment is not activated (`.venv/bin/snakemake ...`); SLURM jobs re-read this file.
shell.prefix(
    f'set -euo pipefail; export PATH="{os.path.dirname(sys.executable)}:$PATH"; '
)

# dataset -> the config key of its raw file (data.<key>) and the `pairfactory pairs` option taking
# it, from the curation stage's own registry (one place for the datasets).
from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write_text, file_sha256
from pairfactory.pairs.overrides import DEFAULT_OVERRIDES_PATH
from pairfactory.pairs.csv_dataset import csv_sources
from pairfactory.pairs.registry import DATASETS as _BUILT_IN
from pairfactory.pairs.registry import all_datasets, samples_dataset

# the built-in datasets and the config's own CSV datasets (csv_datasets): one list for the
# wildcards and the checks below
try:
    _DATASET_SPECS = all_datasets(config)
    CSV_SOURCES = csv_sources(config)
except UserError as err:
    raise WorkflowError(str(err)) from None

RAW_FILES = {
    name: {spec.input_key: f"--{spec.input_key.replace('_', '-')}"}
    for name, spec in _BUILT_IN.items()
}


# Wildcard values come from the code's own lists (datasets, splits, models), never hand-kept copies.
from pairfactory.ml.models.registry import MODEL_NAMES, MODELS, model_input_names
from pairfactory.ml.splits import SPLIT_KINDS


wildcard_constraints:
    dataset="|".join(_DATASET_SPECS),
    target="[a-z0-9_]+",
    tag=r"[a-z0-9]+-[0-9a-f]{8}",
    shard=r"s\d{5}-k\d{3}",
    model="|".join(MODEL_NAMES),
    split="|".join(SPLIT_KINDS),
    repeat=r"\d+",
    fold=r"\d+",


PAIRS_DIR = "results/pairs"
SHARDS_DIR = "results/shards"
MANIFEST_DIR = "results/manifest"
EVALUATE_DIR = "results/evaluate"
REPORT_DIR = "results/report"
MODELS_DIR = "results/models"
DESCRIPTORS_DIR = "results/descriptors"
# Bump when a final model's card changes meaning (2: σ grows with the solute's novelty, the
# domain leaves the holdout out): every final model re-runs once, its members reused.
FINAL_CARD_REVISION = 2


def model_hparams_for(table: str, model: str) -> dict[str, Any]:
    """`model`'s evaluate.model_hparams with the table's evaluate.table_hparams over them (what
    `pairfactory evaluate` and `train` build for a fold or final model of `table`)."""
    evaluate = config["evaluate"]
    own = evaluate.get("table_hparams", {}).get(table, {}).get(model, {})
    return {**evaluate.get("model_hparams", {}).get(model, {}), **own}


def trained_models(
    config: dict[str, Any],
) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(table, model, the entry's own hparams) of every job that trains a model: each fold's
    (evaluate.tables x models, no own hparams) and each final model's."""
    runs = [
        (t, m, None)
        for t in config["evaluate"]["tables"]
        for m in config["evaluate"]["models"]
    ]
    return runs + [
        (e["table"], e["model"], e.get("hparams")) for e in config["final_models"]
    ]


def model_reads_descriptors(
    table: str, model: str, own: dict[str, Any] | None = None
) -> bool:
    """Whether `model` on `table`, built with its hyper-parameters there (model_hparams_for, and
    a final_models entry's own `hparams` over them), reads a descriptor of every pair as an input
    (probpair with alpb_input: true)."""
    return bool(
        model_input_names(model, {**model_hparams_for(table, model), **(own or {})})
    )


def check_config(config: dict[str, Any]) -> None:
    """Cross-key checks the schema cannot express; fail at parse time, naming the key."""
    datasets = config["datasets"]
    known = ", ".join(_DATASET_SPECS)
    for where, names in (
        ("datasets", datasets),
        ("qm.datasets", list(config["qm"]["datasets"])),
    ):
        for dataset in names:
            if dataset not in _DATASET_SPECS:
                raise WorkflowError(
                    f"config: {where} lists {dataset!r}, which is neither a built-in dataset nor "
                    f"under csv_datasets (known: {known})"
                )
    for dataset in datasets:
        if dataset in CSV_SOURCES:
            path = CSV_SOURCES[dataset].path
            if not path.is_file():
                raise WorkflowError(
                    f"config: csv_datasets.{dataset}.path = {str(path)!r} does not exist "
                    f"(relative paths are relative to the working directory {os.getcwd()})"
                )
            continue
        for key in RAW_FILES[dataset]:
            path = config["data"][key]
            if path is None:
                raise WorkflowError(
                    f"config: datasets lists {dataset!r}, which needs data.{key}; set data.{key} to the "
                    f"file's path or remove {dataset!r} from datasets"
                )
            if not os.path.isfile(path):
                raise WorkflowError(
                    f"config: data.{key} = {path!r} does not exist (relative paths are relative to the "
                    f"working directory {os.getcwd()})"
                )
    for dataset in config["qm"]["datasets"]:
        if dataset not in datasets:
            raise WorkflowError(
                f"config: qm.datasets.{dataset} is set but {dataset!r} is not in datasets {datasets}; "
                "add it to datasets or remove it from qm.datasets"
            )
    tables = [("evaluate.tables", t) for t in config["evaluate"]["tables"]]
    tables += [("final_models", entry["table"]) for entry in config["final_models"]]
    trained_on = list(tables)
    extra_table = config["evaluate"]["extra_pairs"].get("table")
    if extra_table:
        tables.append(("evaluate.extra_pairs.table", extra_table))
    for where, table in tables:
        dataset, target = table.split("/")
        if dataset not in datasets:
            raise WorkflowError(
                f"config: {where} lists {table!r} but {dataset!r} is not in datasets {datasets}"
            )
        if target not in _DATASET_SPECS[dataset].target_names:
            raise WorkflowError(
                f"config: {where} lists {table!r} but {dataset} has the target(s) "
                f"{', '.join(_DATASET_SPECS[dataset].target_names)}"
            )
    if extra_table:
        from pairfactory.pairs.smiles import molecule_key

        for smiles in config["evaluate"]["extra_pairs"].get("solvents") or []:
            if molecule_key(smiles) is None:
                raise WorkflowError(
                    f"config: evaluate.extra_pairs.solvents lists {smiles!r}, which is not a "
                    "SMILES RDKit can read; write each solvent as in the pair table, e.g. O for "
                    "water"
                )
        extra_dataset = extra_table.split("/")[0]
        for where, table in trained_on:
            if table.split("/")[0] == extra_dataset:
                raise WorkflowError(
                    f"config: evaluate.extra_pairs.table {extra_table!r} is of dataset "
                    f"{extra_dataset!r}, which {where} also trains on ({table!r}); extra pairs come "
                    "from another dataset"
                )
    trained_tables = {table for _, table in trained_on}
    runs = {(t, m) for t, m, _ in trained_models(config)}
    for table, models in config["evaluate"].get("table_hparams", {}).items():
        if table not in trained_tables:
            raise WorkflowError(
                f"config: evaluate.table_hparams names {table!r}, which neither evaluate.tables "
                f"nor final_models trains on ({', '.join(sorted(trained_tables))}); check its "
                "spelling, or remove it"
            )
        for model in models:
            if (table, model) not in runs:
                raise WorkflowError(
                    f"config: evaluate.table_hparams.{table} sets {model!r}, which no fold "
                    f"(evaluate.models) or final model trains on {table}; add it there, or "
                    "remove the entry"
                )
    seen = set()
    for entry in config["final_models"]:
        key = (entry["table"], entry["model"])
        if key in seen:
            raise WorkflowError(
                f"config: final_models lists {entry['model']} on {entry['table']} twice; one model "
                "folder per table and model (use `ensemble` for several seeds)"
            )
        seen.add(key)


check_config(config)


def write_config_snapshot(config: dict[str, Any]) -> str:
    """The effective config (config files + --config overrides + schema defaults) as one file that
    the stages read with --config. Its name is its content hash, so it is written once and never
    rewritten under a running job; it is deliberately not an input of any rule, so a config change
    re-runs only the jobs whose own params change."""
    text = yaml.safe_dump(config, sort_keys=True)
    path = (
        Path("results/config")
        / f"config-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    )
    if not path.is_file():
        atomic_write_text(path, text)
    return str(path)


CONFIG_FILE = write_config_snapshot(config)


# ---------------------------------------------------------------------------------------------
# pairs


def raw_inputs(wildcards: Wildcards) -> dict[str, str]:
    if wildcards.dataset in CSV_SOURCES:
        return {"csv": str(CSV_SOURCES[wildcards.dataset].path)}
    return {key: config["data"][key] for key in RAW_FILES[wildcards.dataset]}


def raw_hashes(wildcards: Wildcards) -> dict[str, str]:
    """Content, not mtime, decides re-curation: the raw files, and for MNSol the bundled SMILES
    override table too (editing it must re-curate MNSol)."""
    if wildcards.dataset in CSV_SOURCES:  # the file and how it is read
        return {
            "csv": file_sha256(CSV_SOURCES[wildcards.dataset].path),
            "spec": config["csv_datasets"][wildcards.dataset],
        }
    hashes = {
        key: file_sha256(config["data"][key]) for key in RAW_FILES[wildcards.dataset]
    }
    if wildcards.dataset == "mnsol":
        hashes["mnsol_overrides"] = file_sha256(DEFAULT_OVERRIDES_PATH)
    return hashes


def raw_file_args(wildcards: Wildcards) -> str:
    if (
        wildcards.dataset in CSV_SOURCES
    ):  # the CLI reads its csv_datasets entry (--config)
        return ""
    return " ".join(
        f"{flag} {config['data'][key]}"
        for key, flag in RAW_FILES[wildcards.dataset].items()
    )


def pairs_options(wildcards: Wildcards) -> str:
    if wildcards.dataset == "chromophore" and config["pairs"]["exclude_solid_state"]:
        return "--exclude-solid-state"
    return ""


# ---------------------------------------------------------------------------------------------
# QM shards


def qm_settings() -> Any:
    """The QM settings (pairfactory.qm.settings.QmSettings), parsed once per workflow parse;
    None when no dataset gets QM samples and no model reads a descriptor (whose geometries the
    engine makes), so that such a config loads no QM code."""
    readers = [
        m for t, m, own in trained_models(config) if model_reads_descriptors(t, m, own)
    ]
    if not config["qm"]["datasets"] and not readers:
        return None
    from pairfactory.qm.settings import QmSettings

    return QmSettings.from_config(config)


QM = qm_settings()
# `xtb-1a2b3c4d`: the engine name + a hash of the settings that change results (the shard folder),
# computed from the same settings as in the optimize stage, so that the two always agree.
ENGINE_TAG = QM.engine_tag if QM else None

_PLANS = {}


def shard_plan(dataset: str) -> dict[str, Any]:
    """{shard_id: ShardSpec} of a dataset, from its pair tables (call after the pairs checkpoint).

    Cached per parse: the full Chromophore plan (~20,000 systems) is built once, not per job.
    """
    if dataset not in _PLANS:
        from pairfactory.qm.plan import plan_for_dataset

        _, specs = plan_for_dataset(QM, PAIRS_DIR, dataset)
        _PLANS[dataset] = {spec.shard_id: spec for spec in specs}
    return _PLANS[dataset]


def sampling_settings() -> dict[str, Any]:
    """The `samples` keys that shape each starting complex (not per_system: that only adds blocks).

    The raw config values, not QM.sampling: they are recorded in the params of finished shards,
    and an integer spelled as a float there would re-run them."""
    return {k: v for k, v in sorted(config["samples"].items()) if k != "per_system"}


def shard_content_hash(wildcards: Wildcards) -> str:
    """The shard's systems and sample indices, hashed: the param that re-runs a shard when (and only
    when) its own work changes."""
    plan = shard_plan(wildcards.dataset)
    if wildcards.shard not in plan:
        raise WorkflowError(
            f"shard {wildcards.shard} is not in the current plan of {wildcards.dataset} "
            f"({len(plan)} shards); ask for a target the plan holds"
        )
    return plan[wildcards.shard].content_hash


def shard_files(wildcards: Wildcards) -> list[str]:
    """All shard files of a dataset; waits for its pair tables (the checkpoint)."""
    checkpoints.pairs.get(dataset=wildcards.dataset)
    return [
        f"{SHARDS_DIR}/{wildcards.dataset}/{wildcards.tag}/{shard}.parquet"
        for shard in shard_plan(wildcards.dataset)
    ]


_SYSTEM_HASHES = {}


def dataset_systems_sha256(wildcards: Wildcards) -> str:
    """The dataset's systems (their ids, from all its pair tables), hashed: the param that
    re-runs its descriptor table when curation adds or drops a system, and only then (values are
    cached per molecule and solvent, so only the new systems are computed). Hashed once per
    version of the tables, as pair_table_sha256."""
    from pairfactory.qm.plan import load_systems, pair_table_paths

    tables = pair_table_paths(PAIRS_DIR, wildcards.dataset)
    if not tables:
        return "not curated yet"
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in tables)
    if key not in _SYSTEM_HASHES:
        ids = sorted(load_systems(PAIRS_DIR, wildcards.dataset)["system_id"])
        _SYSTEM_HASHES[key] = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return _SYSTEM_HASHES[key]


# ---------------------------------------------------------------------------------------------
# evaluation


def pair_table_path(wildcards: Wildcards) -> str:
    return f"{PAIRS_DIR}/{wildcards.dataset}/{wildcards.target}.parquet"


def pairs_ready(wildcards: Wildcards) -> list[str]:
    """No input file, only the wait for the dataset's curation (the checkpoint)."""
    checkpoints.pairs.get(dataset=wildcards.dataset)
    return []


def evaluate_sample_inputs(
    wildcards: Wildcards, own_hparams: dict[str, Any] | None = None
) -> dict[str, str]:
    """For a model that learns from QM samples, on a dataset whose samples the run makes (its own,
    or those of the dataset it shares them with: samples_source): the manifest (written once every
    shard is done) and, when configured, the ALPB descriptor table; for a model that
    reads ALPB as an input, the descriptor table on every dataset, and with extra pairs the extra
    table's dataset's one too (its pairs need their values; a model that learns ALPB only as an
    auxiliary target keeps that target for the table's own pairs, as before extra pairs).

    The descriptor tables are `ancient`: built before the job when missing, but a table rebuilt
    because its dataset gained systems (another target's, another table's) re-runs no fold by
    itself. A fold whose own pairs change re-runs by its table_sha256 param, and one whose extra
    pairs change by its protocol param; the values of the systems a fold already had are cached
    and come back the same.
    """
    descriptors = ancient(descriptor_table_path(wildcards.dataset))
    inputs = {}
    source = samples_source(wildcards.dataset)
    if MODELS[wildcards.model].uses_samples and source:
        inputs["manifest"] = f"{MANIFEST_DIR}/{source}/{ENGINE_TAG}/manifest.parquet"
        if "alpb" in config["evaluate"]["descriptors"]:
            inputs["descriptors"] = descriptors
    table = f"{wildcards.dataset}/{wildcards.target}"
    if model_reads_descriptors(table, wildcards.model, own_hparams):
        inputs["descriptors"] = descriptors
        extra_table = config["evaluate"]["extra_pairs"].get("table")
        if extra_table:
            inputs["extra_descriptors"] = ancient(
                descriptor_table_path(extra_table.split("/")[0])
            )
    return inputs


def descriptor_solvents(wildcards: Wildcards) -> str:
    """`--solvent` flags for the descriptor table of the extra pairs' dataset when
    evaluate.extra_pairs.solvents narrows them: check_config keeps that dataset out of every
    table trained on, so no model reads its other systems. Empty for any other dataset.
    """
    extra = config["evaluate"]["extra_pairs"]
    table, solvents = extra.get("table"), extra.get("solvents") or []
    if not table or table.split("/")[0] != wildcards.dataset or not solvents:
        return ""
    return " ".join(f"--solvent {shlex.quote(s)}" for s in solvents)


def samples_source(dataset: str) -> str | None:
    """The dataset whose shards hold `dataset`'s samples: itself when it gets QM samples, else the
    dataset its systems are sampled under (FreeSolv-560's are FreeSolv's: registry `samples_of`)
    when that one does; None when neither does."""
    for source in (dataset, samples_dataset(dataset)):
        if source in config["qm"]["datasets"]:
            return source
    return None


def descriptor_table_path(dataset: str) -> str:
    return f"{DESCRIPTORS_DIR}/{dataset}/{ENGINE_TAG}/alpb.parquet"


def evaluate_sample_flags(wildcards: Wildcards, input: Any) -> str:
    flags = []
    if "manifest" in input.keys():
        # the shards of the manifest the job waited for: results/manifest/<dataset>/<tag>/...
        source = Path(input.manifest).parts[-3]
        flags.append(f"--shards-dir {SHARDS_DIR}/{source}/{ENGINE_TAG}")
    if "descriptors" in input.keys():
        flags.append(f"--descriptors {input.descriptors}")
    if "extra_descriptors" in input.keys():
        flags.append(f"--extra-descriptors {input.extra_descriptors}")
    return " ".join(flags)


_TABLE_HASHES = {}


def pair_table_sha256(wildcards: Wildcards) -> str:
    """The content of the fold's pair table: the param that re-runs its folds when (and only when)
    the table changes. Before the curation has run there is nothing to hash yet.

    Hashed once per file version, not once per fold: a full plan has hundreds of folds per table.
    The key holds mtime and size, so a table rewritten by a checkpoint in this run is hashed anew.
    """
    return _table_sha256(pair_table_path(wildcards))


def _table_sha256(path: str) -> str:
    if not os.path.exists(path):
        return "not curated yet"
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _TABLE_HASHES:
        _TABLE_HASHES[key] = file_sha256(path)
    return _TABLE_HASHES[key]


def extra_pairs_ready(wildcards: Wildcards) -> list[str]:
    """With evaluate.extra_pairs.table: the wait for that dataset's curation (no input file, as
    pairs_ready); `pairfactory` finds the table beside the fold's own."""
    table = config["evaluate"]["extra_pairs"].get("table")
    if table:
        checkpoints.pairs.get(dataset=table.split("/")[0])
    return []


def evaluate_protocol(table: str, model: str) -> dict[str, Any]:
    """The evaluate keys a fold of `model` on `table` depends on (not which tables/models/folds
    run, nor resources, nor another model's or table's hyper-parameters): more repeats add folds,
    and re-run none.
    """
    skip = {
        "tables",
        "models",
        "splits",
        "repeats",
        "run_folds",
        "device",
        "threads",
        "mem_mb",
        "runtime_min",
        "model_hparams",
        "table_hparams",
    }
    if not MODELS[model].uses_samples:  # a baseline's folds don't depend on the samples
        skip |= {"samples", "descriptors"}
    protocol = {k: v for k, v in sorted(config["evaluate"].items()) if k not in skip}
    # only when set, with the extra table's content (its folds re-run when it changes); without
    # it the params stay as they were before the key existed, so no finished job re-runs
    extra = protocol.pop("extra_pairs", {})
    if extra.get("table"):
        table_path = f"{PAIRS_DIR}/{extra['table']}.parquet"
        protocol["extra_pairs"] = {**extra, "sha256": _table_sha256(table_path)}
    # with the table's own over them: a table without table_hparams keeps the params it had
    # before the key existed, so no finished job re-runs
    protocol["model_hparams"] = model_hparams_for(table, model)
    return protocol


def evaluate_dirs() -> list[str]:
    """One folder per fold, the layout `pairfactory evaluate` and `report` use; with
    evaluate.run_folds, only the first folds of each repeat (the splits stay k-fold)."""
    ev = config["evaluate"]
    n_run = min(ev["folds"], ev["run_folds"] or ev["folds"])
    return [
        f"{EVALUATE_DIR}/{table}/{model}/{split}/r{repeat}-f{fold}"
        for table in ev["tables"]
        for model in ev["models"]
        for split in ev["splits"]
        for repeat in range(ev["repeats"])
        for fold in range(n_run)
    ]


def evaluate_outputs() -> list[str]:
    return [f"{d}/metrics.json" for d in evaluate_dirs()]


def report_manifests() -> list[str]:
    return [
        f"{MANIFEST_DIR}/{dataset}/{ENGINE_TAG}/manifest.parquet"
        for dataset in config["qm"]["datasets"]
    ]


def report_shard_flags(wildcards: Wildcards) -> str:
    """The shard folders whose complexes report.html shows in 3D."""
    folders = [
        f"{SHARDS_DIR}/{dataset}/{ENGINE_TAG}" for dataset in config["qm"]["datasets"]
    ]
    return f"--shards {' '.join(folders)}" if folders else ""


# ---------------------------------------------------------------------------------------------
# final models


def final_model_entry(wildcards: Wildcards) -> dict[str, Any]:
    table = f"{wildcards.dataset}/{wildcards.target}"
    for entry in config["final_models"]:
        if entry["table"] == table and entry["model"] == wildcards.model:
            return entry
    raise WorkflowError(
        f"no final_models entry for {wildcards.model} on {table}; add it to config final_models"
    )


def final_model_settings(wildcards: Wildcards) -> dict[str, Any]:
    """What a final model depends on: its protocol settings, ensemble size, holdout and the
    entry's own hyper-parameters (not the checkpoint interval nor resources)."""
    entry = final_model_entry(wildcards)
    settings = {
        "protocol": evaluate_protocol(
            f"{wildcards.dataset}/{wildcards.target}", wildcards.model
        ),
        "ensemble": entry.get("ensemble", 1),
        "holdout_fraction": config["train"]["holdout_fraction"],
    }
    if entry.get("hparams"):  # only when given: models without keep their params
        settings["hparams"] = entry["hparams"]
    # a model from before the card's last change re-runs once, reusing its trained members
    settings["card"] = FINAL_CARD_REVISION
    return settings


def final_model_sample_inputs(wildcards: Wildcards) -> dict[str, str]:
    """evaluate_sample_inputs for a final model, with its entry's own hyper-parameters."""
    return evaluate_sample_inputs(
        wildcards, final_model_entry(wildcards).get("hparams")
    )


def final_model_hparams_flag(wildcards: Wildcards) -> str:
    """`--hparams` with the entry's own hyper-parameters (over evaluate.model_hparams)."""
    own = final_model_entry(wildcards).get("hparams")
    return f"--hparams {shlex.quote(json.dumps(own, sort_keys=True))}" if own else ""


def final_model_outputs() -> list[str]:
    return [
        f"{MODELS_DIR}/{entry['table']}/{entry['model']}/model.json"
        for entry in config["final_models"]
    ]


# ---------------------------------------------------------------------------------------------
# targets


def final_outputs() -> list[str]:
    outputs = [f"{PAIRS_DIR}/{dataset}" for dataset in config["datasets"]]
    outputs += [
        f"{MANIFEST_DIR}/{dataset}/{ENGINE_TAG}/manifest.parquet"
        for dataset in config["qm"]["datasets"]
    ]
    outputs += final_model_outputs()
    if config["evaluate"]["tables"] and config["evaluate"]["models"]:
        if config["report"]["enabled"]:
            outputs.append(f"{REPORT_DIR}/results.md")
        else:
            outputs += evaluate_outputs()
    return outputs
