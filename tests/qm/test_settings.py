"""QmSettings: one parse of the config for the QM half, and the names and defaults it shares with
the config schema (each kept in one place, these tests fail when a copy drifts)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from pairfactory.config import SCHEMA_PATH, default_config
from pairfactory.errors import UserError
from pairfactory.qm.engines import DEFAULT_ENGINE, ENGINE_NAMES, ENGINES
from pairfactory.qm.samples import SamplingSettings
from pairfactory.qm.settings import QmSettings, QmSubset


def _engine_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["engine"]


def test_schema_engine_names_are_the_registry() -> None:
    name = _engine_schema()["properties"]["name"]
    assert name["enum"] == list(ENGINE_NAMES)
    assert name["default"] == DEFAULT_ENGINE
    # every engine has its sub-section in the schema, and nothing else does
    sections = set(_engine_schema()["properties"]) - {"name", "max_attempts", "timeout_s"}
    assert sections == set(ENGINE_NAMES)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_engine_settings_defaults_are_the_schemas(name: str) -> None:
    spec = ENGINES[name]
    schema_defaults = dict(default_config()["engine"][name])
    for key, field_name in spec.renamed_keys.items():
        schema_defaults[field_name] = schema_defaults.pop(key)
    assert schema_defaults == dataclasses.asdict(spec.settings_type())
    # and the schema's defaults parse to the dataclass's
    assert spec.settings(default_config()["engine"][name]) == spec.settings_type()


def test_qm_settings_defaults_are_the_schemas() -> None:
    without_file = QmSettings.from_config({})
    from_schema = QmSettings.from_config(default_config())
    # the one difference: a config without qm.datasets restricts nothing, the schema's {} is "no QM"
    assert without_file.subsets is None and from_schema.subsets == {}
    assert dataclasses.replace(without_file, subsets={}) == from_schema
    assert from_schema.sampling == SamplingSettings()
    assert from_schema.engine_name == DEFAULT_ENGINE


def test_subsets_and_datasets_without_qm() -> None:
    settings = QmSettings.from_config(
        {"qm": {"datasets": {"freesolv": {"max_systems": 5}, "mnsol": None}}}
    )
    assert settings.subset("freesolv") == QmSubset(max_systems=5, max_heavy_atoms=None)
    assert settings.subset("mnsol") == QmSubset()
    with pytest.raises(UserError, match="gets no QM samples"):
        settings.subset("chromophore")
    assert QmSettings.from_config({}).subset("chromophore") == QmSubset()


def test_engine_tag_and_sampling_key_follow_the_settings() -> None:
    default = QmSettings.from_config({})
    assert default.engine_tag == default.build_engine().tag
    assert (
        default.sampling_key == QmSettings.from_config({"samples": {"per_system": 9}}).sampling_key
    )
    other = QmSettings.from_config({"engine": {"xtb": {"max_steps": 10}}})
    assert other.engine_tag != default.engine_tag
    with pytest.raises(UserError, match="engine.timeout_s"):
        QmSettings.from_config({"engine": {"timeout_s": 0}})


@pytest.mark.parametrize(
    "engine",
    [
        {"xtb": {"accuracy": 0.5}, "timeout_s": 30},
        {"name": "pyscf"},
        {"name": "orca", "orca": {"executable": "/opt/orca/orca", "keywords": "XTB2 Opt"}},
    ],
)
def test_engine_config_rebuilds_the_same_engine(engine: dict) -> None:
    """What a model that reads ALPB records: the engine section that gives prediction the same
    engine, settings and tag (a renamed key comes back under the dataclass's name)."""
    settings = QmSettings.from_config({"engine": engine})
    again = QmSettings.from_config({"engine": settings.engine_config()})
    assert again.engine_tag == settings.engine_tag
    assert again.engine_settings == settings.engine_settings
    assert again.timeout_s == settings.timeout_s
    assert yaml.safe_load(yaml.safe_dump(settings.engine_config())) == settings.engine_config()
