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


def test_schema_dataset_names_are_the_registry() -> None:
    assert _schema()["$defs"]["dataset_name"]["enum"] == list(DATASETS)


def test_schema_tables_are_every_dataset_target() -> None:
    tables = _schema()["$defs"]["table_name"]["enum"]
    expected = [
        f"{name}/{target}" for name, spec in DATASETS.items() for target in spec.target_names
    ]
    assert sorted(tables) == sorted(expected)


def test_schema_split_kinds_are_the_splitters() -> None:
    splits = _schema()["properties"]["evaluate"]["properties"]["splits"]["items"]["enum"]
    assert splits == list(SPLIT_KINDS)


def test_the_schema_is_package_data() -> None:
    # An installed package validates configs without the repository around it.
    assert SCHEMA_PATH.is_file()
    assert SCHEMA_PATH.parent.parent.name == "pairfactory"
