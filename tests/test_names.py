"""Names defined once: the config schema must keep a copy of some lists (JSON schema enums, so
that a wrong value fails before any job runs), and these tests fail when a copy drifts from its
source."""

from __future__ import annotations

import yaml

from pairfactory.config import SCHEMA_PATH
from pairfactory.ml.splits import SPLIT_KINDS
from pairfactory.pairs.registry import DATASETS


def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def test_the_schema_keeps_no_copy_of_the_dataset_list() -> None:
    # Dataset and table names are the registry's plus the config's own csv_datasets, so the
    # schema only says what a name looks like; the workflow checks which exist (common.smk).
    import re

    defs = _schema()["$defs"]
    assert "enum" not in defs["dataset_name"] and "enum" not in defs["table_name"]
    for name, spec in DATASETS.items():
        assert re.fullmatch(defs["dataset_name"]["pattern"], name)
        for target in spec.target_names:
            assert re.fullmatch(defs["table_name"]["pattern"], f"{name}/{target}")


def test_schema_split_kinds_are_the_splitters() -> None:
    splits = _schema()["properties"]["evaluate"]["properties"]["splits"]["items"]["enum"]
    assert splits == list(SPLIT_KINDS)


def test_the_schema_is_package_data() -> None:
    # An installed package validates configs without the repository around it.
    assert SCHEMA_PATH.is_file()
    assert SCHEMA_PATH.parent.parent.name == "pairfactory"
