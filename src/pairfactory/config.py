"""Loading and validating the workflow configuration (``config.yaml``).

The JSON schema ``pairfactory/schemas/config.schema.yaml`` (package data) is the single description
of every key;
Snakemake validates against it at parse time and the CLI stages validate against the same file, so a
wrong key or value fails before any job runs, naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pairfactory.errors import UserError

# Package data, so an installed package validates without the checkout around it.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, merge ``overrides`` (nested dicts), fill schema defaults and validate."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist (pass --config path/to/config.yaml)")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(loaded, dict):
        raise UserError(f"config file {path} must hold a mapping of sections at the top level")
    config = deep_merge(loaded, overrides or {})
    return validate_config(config, source=str(path))


def default_config() -> dict[str, Any]:
    """The configuration with no file at all: every key at its schema default."""
    return validate_config({}, source="schema defaults")


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate against the schema, filling defaults; raise UserError naming the offending key."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator_cls = _validator_filling_defaults(jsonschema.Draft202012Validator)
    errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for error in errors[:10]:
            key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
            lines.append(f"  {key}: {error.message}")
        raise UserError(f"{source}: invalid configuration\n" + "\n".join(lines))
    return config


def _validator_filling_defaults(base_cls: Any) -> Any:
    """A jsonschema validator that also writes ``default`` values into the instance (as Snakemake
    does)."""
    import jsonschema

    validate_properties = base_cls.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema: dict) -> Any:
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base_cls, {"properties": set_defaults})
