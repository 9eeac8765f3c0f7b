"""QM engines behind one interface (``Engine.optimize`` → ``EngineResult``), built from the config.

``build_engine(config["engine"], threads)`` returns the engine named by ``engine.name`` with the
settings of its sub-section; defaults come from the per-engine settings dataclasses, unknown keys
are a UserError naming the key. The engine modules import tblite/PySCF/ASE lazily, so importing
this package is cheap.
"""

from __future__ import annotations

from typing import Any

from pairfactory.engines.base import Engine, engine_tag, settings_from_section
from pairfactory.errors import UserError

ENGINE_NAMES = ("xtb", "pyscf", "orca")
# Keys of the config's ``engine`` section that the optimize stage reads (retries, a budget for
# every engine): accepted here and ignored, they are not engine settings.
_KEYS_READ_ELSEWHERE = frozenset({"max_attempts", "timeout_s"})

__all__ = ["ENGINE_NAMES", "Engine", "build_engine", "engine_tag", "engine_settings", "engine_tag_for_config"]


def engine_settings(engine_config: dict[str, Any] | None) -> tuple[str, Any]:
    """Validate the ``engine`` section: (engine name, its settings dataclass with defaults filled)."""
    config = dict(engine_config or {})
    unknown = sorted(set(config) - {"name", *ENGINE_NAMES, *_KEYS_READ_ELSEWHERE})
    if unknown:
        raise UserError(
            f"unknown key(s) in config section engine: {', '.join(unknown)} "
            f"(known: {', '.join(['name', *ENGINE_NAMES, *sorted(_KEYS_READ_ELSEWHERE)])})"
        )
    name = config.get("name", "xtb")
    if name not in ENGINE_NAMES:
        raise UserError(f"engine.name must be one of {', '.join(ENGINE_NAMES)}; got {name!r}")
    for engine_name in ENGINE_NAMES:
        section = config.get(engine_name)
        if section is not None and not isinstance(section, dict):
            raise UserError(f"config section engine.{engine_name} must be a mapping, got {type(section).__name__}")
    section = dict(config.get(name) or {})
    if name == "xtb":
        from pairfactory.engines.xtb import XtbSettings

        return name, settings_from_section(XtbSettings, section, "engine.xtb")
    if name == "pyscf":
        from pairfactory.engines.pyscf import PyscfSettings

        return name, settings_from_section(PyscfSettings, section, "engine.pyscf")
    from pairfactory.engines.orca import OrcaSettings

    # The config schema names the binary `executable`; both spellings are accepted.
    if "executable" in section:
        executable, binary = section.pop("executable"), section.get("binary")
        if executable is not None and binary is not None and executable != binary:
            raise UserError("engine.orca.binary and engine.orca.executable are both set and differ; keep one")
        section["binary"] = binary if binary is not None else executable
    return name, settings_from_section(OrcaSettings, section, "engine.orca")


def _engine_class(name: str) -> type[Engine]:
    if name == "xtb":
        from pairfactory.engines.xtb import XtbEngine

        return XtbEngine
    if name == "pyscf":
        from pairfactory.engines.pyscf import PyscfEngine

        return PyscfEngine
    from pairfactory.engines.orca import OrcaEngine

    return OrcaEngine


def build_engine(engine_config: dict[str, Any] | None, threads: int = 1) -> Engine:
    """The configured engine, ready to ``optimize``. A missing ORCA binary fails here, early."""
    name, settings = engine_settings(engine_config)
    return _engine_class(name)(settings, threads=threads)


def engine_tag_for_config(engine_config: dict[str, Any] | None) -> str:
    """The tag of the configured engine without building it: planning a workflow (a dry run on a
    login node) must not need the ORCA binary that only compute nodes have."""
    name, settings = engine_settings(engine_config)
    return engine_tag(_engine_class(name).result_settings(settings))
