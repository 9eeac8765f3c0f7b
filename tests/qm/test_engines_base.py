"""The engine interface: status mapping, real interrupting timeouts, engine tags, build_engine."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from pairfactory.errors import UserError
from pairfactory.qm.engines import ENGINES, build_engine, engine_settings, engine_tag
from pairfactory.qm.engines.base import Deadline, Engine, EngineTimeout, Outcome, ScfFailure, Trace
from pairfactory.qm.records import SampleStatus

WATER_Z = np.array([8, 1, 1])
WATER_XYZ = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


class ScriptedEngine(Engine):
    """An engine whose inner optimization does what the test asks, to exercise the base class."""

    name = "scripted"
    method = "none"
    version = "scripted 1"

    def __init__(self, behaviour: str) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.settings = {"behaviour": behaviour}
        self.finished_long_step = False

    @classmethod
    def result_settings(cls, settings: dict) -> dict:
        return {"engine": cls.name, **settings}

    def _optimize(
        self,
        atomic_numbers,
        positions_angstrom,
        charge,
        multiplicity,
        deadline: Deadline,
        trace: Trace,
    ) -> Outcome:
        trace.update(positions_angstrom + 0.01, -1.5, 1)
        if self.behaviour == "long_step":
            with deadline.interrupting():
                time.sleep(30)  # one step that never checks the clock itself
            self.finished_long_step = True
        elif self.behaviour == "busy_steps":
            with deadline.interrupting():
                for step in range(2, 10**9):
                    sum(range(1000))  # pure-Python work between cooperative checks
                    trace.update(positions_angstrom, -1.6, step)
                    deadline.check()
        elif self.behaviour == "scf":
            raise ScfFailure("SCF not converged in 3 cycles")
        elif self.behaviour == "crash":
            raise KeyError("basis set missing for element")
        return Outcome(
            converged=self.behaviour == "ok",
            energy_hartree=-2.0,
            positions_angstrom=positions_angstrom,
            n_steps=4,
        )


def test_statuses_are_returned_not_raised() -> None:
    ok = ScriptedEngine("ok").optimize(WATER_Z, WATER_XYZ)
    assert (
        ok.status is SampleStatus.ok
        and ok.converged
        and ok.energy_hartree == -2.0
        and ok.n_steps == 4
    )
    assert ok.engine_version == "scripted 1" and ok.wall_time_s >= 0
    nc = ScriptedEngine("not_converged").optimize(WATER_Z, WATER_XYZ)
    assert (
        nc.status is SampleStatus.not_converged
        and not nc.converged
        and nc.positions_angstrom.shape == (3, 3)
    )
    scf = ScriptedEngine("scf").optimize(WATER_Z, WATER_XYZ)
    assert scf.status is SampleStatus.scf_failed and "3 cycles" in scf.message
    crash = ScriptedEngine("crash").optimize(WATER_Z, WATER_XYZ)
    assert (
        crash.status is SampleStatus.error
        and "KeyError" in crash.message
        and "basis set" in crash.message
    )
    # The last geometry seen is kept on failures.
    assert np.allclose(crash.positions_angstrom, WATER_XYZ + 0.01) and crash.energy_hartree == -1.5


def test_alarm_interrupts_a_single_long_step_and_restores_the_handler() -> None:
    engine = ScriptedEngine("long_step")
    before = signal.getsignal(signal.SIGALRM)
    # pytest-timeout may have armed its own timer (--timeout): it must come back, not be lost.
    outer_delay, _ = signal.getitimer(signal.ITIMER_REAL)
    result = engine.optimize(WATER_Z, WATER_XYZ, timeout_s=0.2)
    assert result.status is SampleStatus.timeout
    assert not engine.finished_long_step  # the 30 s step was cut short, not waited out
    assert result.n_steps == 1 and result.energy_hartree == -1.5  # last known state is returned
    assert signal.getsignal(signal.SIGALRM) is before
    delay_after, _ = signal.getitimer(signal.ITIMER_REAL)
    assert delay_after == 0.0 if outer_delay == 0.0 else 0.0 < delay_after < outer_delay


def test_outer_alarm_survives_a_nested_engine_timeout() -> None:
    fired = []

    def outer(signum, frame):  # a caller's own budget, e.g. for a whole shard
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, outer)
    previous_timer = signal.getitimer(signal.ITIMER_REAL)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.6)
        result = ScriptedEngine("long_step").optimize(WATER_Z, WATER_XYZ, timeout_s=0.1)
        assert result.status is SampleStatus.timeout
        assert signal.getsignal(signal.SIGALRM) is outer
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 0.6  # re-armed with what was left
        while not fired:
            signal.pause()
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if previous_timer[0] > 0:  # give pytest-timeout its timer back
            signal.setitimer(signal.ITIMER_REAL, *previous_timer)


def test_cooperative_deadline_outside_the_main_thread() -> None:
    results = []
    worker = threading.Thread(
        target=lambda: results.append(
            ScriptedEngine("busy_steps").optimize(WATER_Z, WATER_XYZ, timeout_s=0.2)
        )
    )
    worker.start()
    worker.join(60)
    assert not worker.is_alive()
    assert results[0].status is SampleStatus.timeout and results[0].n_steps > 2


def test_deadline_check() -> None:
    assert not Deadline(None).expired() and Deadline(None).remaining() is None
    expired = Deadline(1e-9)
    time.sleep(0.01)
    with pytest.raises(EngineTimeout):
        expired.check()


def test_bad_geometry_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        ScriptedEngine("ok").optimize(WATER_Z, WATER_XYZ[:2])
    with pytest.raises(ValueError, match="NaN"):
        ScriptedEngine("ok").optimize(WATER_Z, WATER_XYZ * np.nan)
    with pytest.raises(ValueError, match="multiplicity"):
        ScriptedEngine("ok").optimize(WATER_Z, WATER_XYZ, multiplicity=0)


def test_engine_tag_hashes_the_settings() -> None:
    a = engine_tag({"engine": "xtb", "fmax": 0.05, "max_steps": 300})
    assert a == engine_tag(
        {"max_steps": 300, "fmax": 0.05, "engine": "xtb"}
    )  # key order is irrelevant
    assert a.startswith("xtb-") and len(a) == len("xtb-") + 8
    assert a != engine_tag({"engine": "xtb", "fmax": 0.04, "max_steps": 300})


def test_build_engine_defaults_and_tags() -> None:
    default = build_engine({})
    assert (
        default.name == "xtb"
        and default.method == "GFN2-xTB"
        and default.version.startswith("tblite ")
    )
    assert default.settings_dict()["max_steps"] == 300 and default.default_timeout_s == 120.0
    # Settings that change results change the tag; the time budget and threads do not.
    assert build_engine({"name": "xtb", "xtb": {"fmax_ev_per_angstrom": 0.1}}).tag != default.tag
    assert build_engine({"xtb": {"timeout_s": 5}}, threads=2).tag == default.tag
    # Keys the optimize stage reads are accepted in the engine section.
    assert build_engine({"name": "xtb", "max_attempts": 2, "timeout_s": None}).tag == default.tag
    pyscf = build_engine({"name": "pyscf"})
    assert pyscf.method == "B3LYP/def2-SVP" and pyscf.tag.startswith("pyscf-")


def engine_tag_for_config(engine_config: dict) -> str:
    """The tag of the engine a config ``engine`` section describes, without building it."""
    name, settings = engine_settings(engine_config)
    return ENGINES[name].tag(settings)


def test_settings_outside_the_tag_do_not_change_it() -> None:
    pyscf = engine_tag_for_config({"name": "pyscf"})
    assert engine_tag_for_config({"name": "pyscf", "pyscf": {"timeout_s": 5}}) == pyscf
    assert engine_tag_for_config({"name": "pyscf", "pyscf": {"max_steps": 7}}) != pyscf
    orca = {"keywords": "XTB2 Opt"}
    base = engine_tag_for_config({"name": "orca", "orca": orca})
    moved = {
        "binary": "/elsewhere/orca",
        "nprocs": 8,
        "maxcore_mb": 4000,
        "keep_files": True,
        "timeout_s": 5,
    }
    assert engine_tag_for_config({"name": "orca", "orca": {**orca, **moved}}) == base
    assert engine_tag_for_config({"name": "orca", "orca": {**orca, "max_steps": 7}}) != base


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "gaussian"}, "engine.name"),
        ({"name": "xtb", "xtb": {"fmax": 0.1}}, "engine.xtb: fmax"),
        ({"name": "xtb", "xtb": {"optimizer": "SD"}}, "engine.xtb.optimizer"),
        ({"name": "xtb", "xtb": {"max_steps": 0}}, "engine.xtb.max_steps"),
        ({"name": "pyscf", "pyscf": {"basis_set": "sto-3g"}}, "basis_set"),
        ({"name": "pyscf", "pyscf": {"convergence_set": "fast"}}, "engine.pyscf.convergence_set"),
        ({"name": "xtb", "threads": 2}, "section engine: threads"),
        ({"name": "xtb", "xtb": "GFN2"}, "engine.xtb must be a mapping"),
    ],
)
def test_build_engine_config_errors_name_the_key(config: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        build_engine(config)


def test_engine_settings_fill_defaults() -> None:
    name, settings = engine_settings(
        {"name": "orca", "orca": {"keywords": "XTB2 Opt", "executable": "/opt/orca/orca"}}
    )
    assert name == "orca" and settings.binary == "/opt/orca/orca" and settings.maxcore_mb == 1000
    # A schema-filled `executable: null` next to `binary` is no conflict; two different paths are.
    _, settings = engine_settings(
        {"name": "orca", "orca": {"binary": "/opt/orca/orca", "executable": None}}
    )
    assert settings.binary == "/opt/orca/orca"
    with pytest.raises(UserError, match="both set"):
        engine_settings({"name": "orca", "orca": {"binary": "/a/orca", "executable": "/b/orca"}})


def test_engine_tag_for_config_needs_no_binary_and_matches_the_built_engine(tmp_path, monkeypatch):
    xtb_config = {"name": "xtb", "xtb": {"fmax_ev_per_angstrom": 0.1}}
    assert engine_tag_for_config(xtb_config) == build_engine(xtb_config).tag
    assert engine_tag_for_config(xtb_config) != engine_tag_for_config({"name": "xtb"})
    # ORCA: a dry run plans shards on a machine without the binary
    monkeypatch.delenv("ORCA_BINARY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    orca_config = {"name": "orca", "orca": {"binary": str(tmp_path / "missing-orca")}}
    assert engine_tag_for_config(orca_config).startswith("orca-")


@pytest.mark.parametrize("engine", ["xtb", "pyscf", "orca"])
@pytest.mark.parametrize("timeout", ["60", True, 0, -5])
def test_every_engine_refuses_a_bad_timeout_naming_the_key(engine, timeout):
    # the same check for all three engines: a string must not pass until it meets a '>' at run time
    with pytest.raises(
        UserError, match=rf"engine\.{engine}\.timeout_s must be a number > 0 or null, got"
    ):
        engine_tag_for_config({"name": engine, engine: {"timeout_s": timeout}})
