"""QM engines behind one interface (``Engine.optimize`` → ``EngineResult``), looked up by name.

``ENGINES`` maps each engine name (config ``engine.name``) to its ``EngineSpec``: the settings
dataclass of its config sub-section and the engine class. ``engine_settings(config["engine"])``
validates the section into (name, settings); ``ENGINES[name].build(settings, threads)`` makes the
engine and ``ENGINES[name].tag(settings)`` gives its tag without building it. The engine classes
import tblite/PySCF/ASE's calculators on first use, so importing this package is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pairfactory.errors import UserError
from pairfactory.qm.engines.base import Engine, engine_tag, settings_from_section
from pairfactory.qm.engines.orca import OrcaEngine, OrcaSettings
from pairfactory.qm.engines.pyscf import PyscfEngine, PyscfSettings
from pairfactory.qm.engines.xtb import XtbEngine, XtbSettings

__all__ = [
    "ENGINES",
    "ENGINE_NAMES",
    "Engine",
    "EngineSpec",
    "build_engine",
    "engine_settings",
    "engine_tag",
]

DEFAULT_ENGINE = "xtb"
# Keys of the config's ``engine`` section that the optimize stage reads (retries, a budget for
# every engine): accepted here and ignored, they are not engine settings.
_KEYS_READ_ELSEWHERE = frozenset({"max_attempts", "timeout_s"})


@dataclass(frozen=True)
class EngineSpec:
    """One engine: the settings dataclass of its config sub-section and the class that runs it."""

    name: str
    settings_type: type
    engine_type: type[Engine]
    # config key -> settings field, for a key the schema spells otherwise than the dataclass
    renamed_keys: Mapping[str, str] = field(default_factory=dict)

    def settings(self, section: Mapping[str, Any] | None) -> Any:
        """The settings dataclass from the config sub-section (defaults filled, keys checked)."""
        section = dict(section or {})
        for key, field_name in self.renamed_keys.items():
            if key not in section:
                continue
            value, other = section.pop(key), section.get(field_name)
            if value is not None and other is not None and value != other:
                raise UserError(
                    f"engine.{self.name}.{field_name} and engine.{self.name}.{key} are both set "
                    "and differ; keep one"
                )
            section[field_name] = other if other is not None else value
        return settings_from_section(self.settings_type, section, f"engine.{self.name}")

    def tag(self, settings: Any) -> str:
        """The engine tag of ``settings`` without building the engine: planning a workflow (a dry
        run on a login node) must not need the ORCA binary that only compute nodes have."""
        return engine_tag(self.engine_type.result_settings(settings))

    def build(self, settings: Any, threads: int = 1) -> Engine:
        """The engine, ready to ``optimize``. A missing ORCA binary fails here, early."""
        return self.engine_type(settings, threads=threads)


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec("xtb", XtbSettings, XtbEngine),
        EngineSpec("pyscf", PyscfSettings, PyscfEngine),
        # The config schema names ORCA's binary `executable`; both spellings are accepted.
        EngineSpec("orca", OrcaSettings, OrcaEngine, renamed_keys={"executable": "binary"}),
    )
}
ENGINE_NAMES: tuple[str, ...] = tuple(ENGINES)


def engine_settings(engine_config: Mapping[str, Any] | None) -> tuple[str, Any]:
    """Validate the config's ``engine`` section: (engine name, its settings dataclass)."""
    config = dict(engine_config or {})
    known = {"name", *ENGINE_NAMES, *_KEYS_READ_ELSEWHERE}
    unknown = sorted(set(config) - known)
    if unknown:
        raise UserError(
            f"unknown key(s) in config section engine: {', '.join(unknown)} "
            f"(known: {', '.join(['name', *ENGINE_NAMES, *sorted(_KEYS_READ_ELSEWHERE)])})"
        )
    name = config.get("name", DEFAULT_ENGINE)
    if name not in ENGINES:
        raise UserError(f"engine.name must be one of {', '.join(ENGINE_NAMES)}; got {name!r}")
    for engine_name in ENGINE_NAMES:
        section = config.get(engine_name)
        if section is not None and not isinstance(section, Mapping):
            raise UserError(
                f"config section engine.{engine_name} must be a mapping, "
                f"got {type(section).__name__}"
            )
    return name, ENGINES[name].settings(config.get(name))


def build_engine(engine_config: Mapping[str, Any] | None, threads: int = 1) -> Engine:
    """The engine a config ``engine`` section describes (for one-off use: tests, benchmarks)."""
    name, settings = engine_settings(engine_config)
    return ENGINES[name].build(settings, threads)
