"""Every config value the QM stages read, parsed and validated once: ``QmSettings.from_config``.

The edges (the ``pairfactory`` subcommands, the workflow's ``common.smk``, the benchmarks) turn the
config dict into one ``QmSettings`` and hand it down; plan, optimize and collect never see the
dict. A key left out takes the default below, which is also the schema's
(``src/pairfactory/schemas/config.schema.yaml``; ``tests/qm/test_settings.py`` holds them equal).
See docs/shards.md, "Config keys".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pairfactory.errors import UserError
from pairfactory.qm.engines import ENGINES, Engine, engine_settings
from pairfactory.qm.engines.base import require_positive_int, require_timeout
from pairfactory.qm.samples import SamplingSettings

DEFAULT_MAX_ATTEMPTS = 2
DEFAULT_SAMPLES_PER_SYSTEM = 4
DEFAULT_SYSTEMS_PER_SHARD = 16
DEFAULT_SAMPLES_PER_SHARD = 4


@dataclass(frozen=True)
class QmSubset:
    """Which systems of one dataset get QM samples (config ``qm.datasets.{dataset}``)."""

    # the first N systems, in the plan's stable order, that pass the heavy-atom filter; None: all
    max_systems: int | None = None
    # heavy atoms of the solute + one solvent molecule; None: no limit
    max_heavy_atoms: int | None = None


@dataclass(frozen=True)
class QmSettings:
    """The config of the QM half: seed, complex building, engine, retries, plan sizes, subsets."""

    global_seed: int
    sampling: SamplingSettings
    engine_name: str
    # the settings dataclass of ENGINES[engine_name], e.g. XtbSettings
    engine_settings: Any
    # attempts per sample; not part of the engine tag
    max_attempts: int
    # per-sample budget for every engine; None: the engine's own (engine.{name}.timeout_s)
    timeout_s: float | None
    samples_per_system: int
    systems_per_shard: int
    samples_per_shard: int
    # dataset -> its subset; None when the config has no qm.datasets: every dataset, all systems
    subsets: Mapping[str, QmSubset] | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> QmSettings:
        """Validate the sections seed, samples, shards, engine and qm of a config; a UserError
        names the offending key."""
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed must be an integer >= 0, got {seed!r}")
        engine = dict(config.get("engine") or {})
        max_attempts = engine.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
        require_positive_int(max_attempts, "engine.max_attempts")
        timeout_s = engine.get("timeout_s")
        require_timeout(timeout_s, "engine.timeout_s")
        engine_name, settings = engine_settings(engine)
        samples = dict(config.get("samples") or {})
        shards = config.get("shards") or {}
        qm_datasets = (config.get("qm") or {}).get("datasets")
        subsets = None
        if qm_datasets is not None:
            subsets = {
                dataset: QmSubset(
                    max_systems=(subset or {}).get("max_systems"),
                    max_heavy_atoms=(subset or {}).get("max_heavy_atoms"),
                )
                for dataset, subset in qm_datasets.items()
            }
        return cls(
            global_seed=seed,
            sampling=SamplingSettings.from_config(samples),
            engine_name=engine_name,
            engine_settings=settings,
            max_attempts=max_attempts,
            timeout_s=None if timeout_s is None else float(timeout_s),
            samples_per_system=samples.get("per_system", DEFAULT_SAMPLES_PER_SYSTEM),
            systems_per_shard=shards.get("systems_per_shard", DEFAULT_SYSTEMS_PER_SHARD),
            samples_per_shard=shards.get("samples_per_shard", DEFAULT_SAMPLES_PER_SHARD),
            subsets=subsets,
        )

    @property
    def engine_tag(self) -> str:
        """``xtb-1a2b3c4d``: the engine name + a hash of its settings that change results (the
        shard folder); computed without building the engine."""
        return ENGINES[self.engine_name].tag(self.engine_settings)

    @property
    def sampling_key(self) -> str:
        """Canonical JSON of the complex-building settings (config ``samples`` less
        ``per_system``, defaults filled), so a config that spells out a default gives the same key
        as one that omits it. It enters every shard's content hash and every row."""
        return json.dumps(asdict(self.sampling), sort_keys=True, separators=(",", ":"))

    def engine_config(self) -> dict[str, Any]:
        """The config ``engine`` section (JSON-able, every setting spelled out) that rebuilds this
        engine with ``from_config({"engine": ...})``: what a model that reads ALPB records, so
        that prediction optimizes its molecules as the training table's were."""
        section: dict[str, Any] = {
            "name": self.engine_name,
            self.engine_name: asdict(self.engine_settings),
        }
        if self.timeout_s is not None:
            section["timeout_s"] = self.timeout_s
        return section

    def build_engine(self, threads: int = 1) -> Engine:
        """The configured engine (cheap: the engine libraries load on its first optimize)."""
        return ENGINES[self.engine_name].build(self.engine_settings, threads)

    def subset(self, dataset: str) -> QmSubset:
        """Which systems of ``dataset`` get QM samples; a UserError if the config gives it none."""
        if self.subsets is None:
            return QmSubset()
        if dataset not in self.subsets:
            raise UserError(
                f"dataset {dataset!r} gets no QM samples: qm.datasets lists "
                f"{sorted(self.subsets)}; add 'qm: {{datasets: {{{dataset}: {{}}}}}}' to the config"
            )
        return self.subsets[dataset]
