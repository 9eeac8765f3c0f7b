"""One list of model names: the registry, with the config schema's enums held to it, importable
without torch (the CLI offers the names as choices)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import yaml

from pairfactory.config import SCHEMA_PATH
from pairfactory.ml.models import MODEL_NAMES


def _model_name_sets(node: Any, where: str = "") -> Iterator[tuple[str, list[str]]]:
    """Every list and every mapping's keys in the schema that name a model."""
    if isinstance(node, dict):
        if any(name in node for name in MODEL_NAMES):
            yield where, sorted(node)
        for key, value in node.items():
            yield from _model_name_sets(value, f"{where}/{key}")
    elif isinstance(node, list):
        if any(isinstance(v, str) and v in MODEL_NAMES for v in node):
            yield where, sorted(node)
        for i, value in enumerate(node):
            yield from _model_name_sets(value, f"{where}/{i}")


def test_the_schema_lists_exactly_the_registered_models():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    found = dict(_model_name_sets(schema))
    # every choice of a model (an enum, the keys of a per-model mapping) is the registry's list;
    # a default is a selection from it
    choices = {where: names for where, names in found.items() if not where.endswith("/default")}
    assert {"/$defs/model_name/enum"} <= set(choices), found
    assert {"/$defs/hparams_by_model/properties"} <= set(choices), found
    # evaluate.model_hparams and each table of evaluate.table_hparams are that per-model mapping
    evaluate = schema["properties"]["evaluate"]["properties"]
    assert evaluate["model_hparams"]["$ref"] == "#/$defs/hparams_by_model"
    assert evaluate["table_hparams"]["additionalProperties"]["$ref"] == "#/$defs/hparams_by_model"
    for where, names in choices.items():
        assert names == sorted(MODEL_NAMES), where
    for where, names in found.items():
        assert set(names) <= set(MODEL_NAMES), where


def test_model_names_and_the_evaluate_parser_need_no_torch():
    code = (
        "import sys; from pairfactory.cli import build_parser; build_parser(only='evaluate'); "
        "from pairfactory.ml.models import MODEL_NAMES; "
        "print(sorted(m for m in ('torch', 'dgl', 'rdkit') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
