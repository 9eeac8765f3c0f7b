"""The one interface every QM engine implements, and the wall-clock timeout they share.

``Engine.optimize`` never raises for chemistry failures: it maps them to a SampleStatus and
returns an EngineResult, so the optimize stage can record every sample (in = kept + rejected).

Timeouts. An in-process engine (xtb, PySCF) gets two guards that work together:
- a cooperative check after every optimizer step (ASE step callback, geomeTRIC callback), which
  stops cleanly with the last geometry;
- a SIGALRM timer (``signal.setitimer``) that raises ``EngineTimeout`` inside a single long step
  (one slow SCF). Python runs signal handlers between bytecodes, so the exception surfaces as soon
  as the current C call (one tblite singlepoint, one PySCF integral batch) returns; PySCF's SCF loop
  is Python, so it is interrupted within one iteration.
SIGALRM only exists in the main thread of a process; from another thread only the cooperative
check runs (documented limit). We chose this over a killable subprocess per sample because a
fork per sample after tblite/OpenMP have started threads is unsafe (libgomp after fork can hang)
and a spawn per sample re-imports PySCF (~1 s), more than a whole xtb optimization. ORCA already
runs as a subprocess and is killed (with its process group) at the deadline instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import numpy as np

from pairfactory.errors import UserError
from pairfactory.qm.records import EngineResult, SampleStatus

log = logging.getLogger(__name__)


class EngineTimeout(Exception):
    """The wall-clock budget of one optimization ran out (raised by the alarm or a step check)."""


class ScfFailure(Exception):
    """The SCF did not converge within its iteration cap."""


class Deadline:
    """A monotonic-clock deadline; ``check()`` raises EngineTimeout once it has passed."""

    def __init__(self, timeout_s: float | None) -> None:
        self.start = time.monotonic()
        self.timeout_s = timeout_s
        self.at = None if timeout_s is None else self.start + float(timeout_s)

    def remaining(self) -> float | None:
        return None if self.at is None else max(self.at - time.monotonic(), 0.0)

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def check(self) -> None:
        if self.expired():
            raise EngineTimeout(f"wall-clock limit of {self.timeout_s:g} s reached")

    @contextmanager
    def interrupting(self) -> Iterator[None]:
        """Within this block, also interrupt a single long step with SIGALRM (main thread only).

        Engines wrap only the computation in it, inside their own context managers (stdout
        redirection, thread limits), so that an interrupt never lands in those managers' cleanup.
        A timer armed by the caller (e.g. a whole-job budget) is restored with the time it had
        left, so nesting works.
        """
        remaining = self.remaining()
        if (
            remaining is None
            or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()
        ):
            yield
            return
        self.check()
        state = {"armed": True}
        armed_at = time.monotonic()

        def restore() -> None:
            # Idempotent and called exactly once: by the handler when it raises, else on exit.
            state["armed"] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_delay > 0:
                left = previous_delay - (time.monotonic() - armed_at)
                # An outer timer that expired meanwhile fires right away rather than being lost.
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), previous_interval)

        def on_alarm(signum: int, frame: Any) -> None:
            if not state["armed"]:
                return
            restore()
            raise EngineTimeout(f"wall-clock limit of {self.timeout_s:g} s reached (interrupted)")

        previous_handler = signal.signal(signal.SIGALRM, on_alarm)
        previous_delay, previous_interval = signal.setitimer(
            signal.ITIMER_REAL, max(remaining, 1e-6)
        )
        try:
            yield
        finally:
            if state["armed"]:
                restore()


class Trace:
    """The last geometry and energy an optimizer reported, kept for timeouts and failures.

    The three values live in one tuple replaced by a single assignment, so an alarm interrupt
    cannot leave a geometry of one step next to the energy of another.
    """

    def __init__(self) -> None:
        self._state: tuple[np.ndarray | None, float | None, int] = (None, None, 0)

    def update(
        self, positions_angstrom: np.ndarray, energy_hartree: float | None, n_steps: int
    ) -> None:
        positions = np.array(positions_angstrom, dtype=np.float64).reshape(-1, 3)
        energy = None if energy_hartree is None else float(energy_hartree)
        self._state = (positions, energy, int(n_steps))

    @property
    def positions_angstrom(self) -> np.ndarray | None:
        return self._state[0]

    @property
    def energy_hartree(self) -> float | None:
        return self._state[1]

    @property
    def n_steps(self) -> int:
        return self._state[2]


@dataclass
class Outcome:
    """What an engine's inner optimization returns when it ran to its end (converged or not)."""

    converged: bool
    energy_hartree: float | None
    positions_angstrom: np.ndarray | None
    n_steps: int
    message: str = ""
    status: SampleStatus | None = None  # None: ok if converged else not_converged


class Engine(ABC):
    """A QM engine that optimizes geometries. Subclasses implement ``_optimize``."""

    name: str = ""
    method: str = ""
    version: str = ""
    # Settings fields that do not change results, so they stay out of the engine tag: a longer
    # time budget must not move finished shards to a new folder.
    settings_outside_tag: tuple[str, ...] = ("timeout_s",)

    def __init__(self, threads: int = 1, default_timeout_s: float | None = None) -> None:
        if threads < 1:
            raise UserError(f"engine threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.default_timeout_s = default_timeout_s

    @classmethod
    def result_settings(cls, settings: Any) -> dict[str, Any]:
        """Every setting that changes results (not threads, not the timeout budget), with the
        engine name."""
        return {"engine": cls.name, **settings_as_dict(settings, exclude=cls.settings_outside_tag)}

    def settings_dict(self) -> dict[str, Any]:
        return self.result_settings(self.settings)

    @property
    def tag(self) -> str:
        return engine_tag(self.settings_dict())

    @abstractmethod
    def _optimize(
        self,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int,
        multiplicity: int,
        deadline: Deadline,
        trace: Trace,
    ) -> Outcome:
        """Run the optimization; raise ScfFailure / EngineTimeout, or anything else for
        ``error``."""

    def energy(
        self,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int = 0,
        multiplicity: int = 1,
    ) -> float:
        """Single-point energy in Hartree (raises on failure, unlike ``optimize``)."""
        raise NotImplementedError(f"engine {self.name} has no single-point energy")

    def optimize(
        self,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int = 0,
        multiplicity: int = 1,
        timeout_s: float | None = None,
    ) -> EngineResult:
        """Optimize a geometry; every chemistry or engine failure becomes a status, never an
        exception.

        ``timeout_s=None`` uses the engine's configured default budget (``timeout_s`` of its
        config).
        Malformed inputs (shapes, multiplicity < 1) are programming errors and raise ValueError.
        """
        numbers, positions = _check_geometry(atomic_numbers, positions_angstrom, multiplicity)
        if timeout_s is None:
            timeout_s = self.default_timeout_s
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s!r}")
        trace = Trace()
        start = time.monotonic()
        try:
            deadline = Deadline(timeout_s)
            outcome = self._optimize(
                numbers, positions, int(charge), int(multiplicity), deadline, trace
            )
        except EngineTimeout as err:
            return self._result(SampleStatus.timeout, trace, start, str(err))
        except ScfFailure as err:
            return self._result(SampleStatus.scf_failed, trace, start, str(err))
        except Exception as err:  # noqa: BLE001 - the contract: any engine exception is a recorded error
            log.debug("engine %s failed", self.name, exc_info=True)
            return self._result(SampleStatus.error, trace, start, f"{type(err).__name__}: {err}")
        status = outcome.status or (
            SampleStatus.ok if outcome.converged else SampleStatus.not_converged
        )
        return EngineResult(
            status=status,
            energy_hartree=outcome.energy_hartree,
            positions_angstrom=outcome.positions_angstrom,
            n_steps=outcome.n_steps,
            converged=outcome.converged and status is SampleStatus.ok,
            wall_time_s=time.monotonic() - start,
            message=outcome.message,
            engine_version=self.version,
        )

    def _result(
        self, status: SampleStatus, trace: Trace, start: float, message: str
    ) -> EngineResult:
        return EngineResult(
            status=status,
            energy_hartree=trace.energy_hartree,
            positions_angstrom=trace.positions_angstrom,
            n_steps=trace.n_steps,
            converged=False,
            wall_time_s=time.monotonic() - start,
            message=message,
            engine_version=self.version,
        )


def engine_tag(settings: dict[str, Any]) -> str:
    """``{engine name}-{first 8 hex of sha256 of the settings as canonical JSON}``."""
    name = settings.get("engine")
    if not name:
        raise ValueError("engine settings must hold the engine name under 'engine'")
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return f"{name}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def _check_geometry(
    atomic_numbers: np.ndarray, positions_angstrom: np.ndarray, multiplicity: int
) -> tuple[np.ndarray, np.ndarray]:
    numbers = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    positions = np.asarray(positions_angstrom, dtype=np.float64)
    if positions.ndim != 2 or positions.shape != (len(numbers), 3):
        raise ValueError(
            f"positions must have shape ({len(numbers)}, 3) for {len(numbers)} atoms, "
            f"got {positions.shape}"
        )
    if len(numbers) == 0:
        raise ValueError("cannot optimize an empty geometry")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions hold NaN or infinite coordinates")
    if int(multiplicity) < 1:
        raise ValueError(f"multiplicity must be >= 1, got {multiplicity}")
    return numbers, positions.copy()


SettingsT = TypeVar("SettingsT")


def settings_from_section(
    cls: type[SettingsT], section: dict[str, Any] | None, where: str
) -> SettingsT:
    """Build a settings dataclass from a config section; unknown keys are a UserError naming
    them."""
    section = dict(section or {})
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(section) - known)
    if unknown:
        raise UserError(
            f"unknown key(s) in config section {where}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    try:
        return cls(**section)
    except TypeError as err:
        raise UserError(f"config section {where}: {err}") from err


def settings_as_dict(settings: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in asdict(settings).items() if k not in exclude}


def require_positive_number(value: Any, key: str) -> None:
    """UserError naming ``key`` unless ``value`` is an int or float > 0 (bool is not a number
    here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserError(f"{key} must be a number > 0, got {value!r}")


def require_timeout(value: Any, key: str) -> None:
    """UserError naming ``key`` unless ``value`` is null (no limit) or a number of seconds > 0."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
    ):
        raise UserError(f"{key} must be a number > 0 or null, got {value!r}")


def require_positive_int(value: Any, key: str) -> None:
    """UserError naming ``key`` unless ``value`` is an int >= 1 (bool is not a count here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key} must be an integer >= 1, got {value!r}")
