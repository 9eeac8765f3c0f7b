"""ORCA, with ORCA's own optimizer, driven through ASE's ORCA calculator (config ``engine.orca``).

ASE's ``ORCA`` calculator does single points; here it writes the input file (keywords, ``%pal``,
``%maxcore``, ``%geom MaxIter``, charge/multiplicity, coordinates) and builds the command line from
``OrcaProfile(command=binary)``, while the run itself is a ``subprocess.Popen`` in its own process
group so that a wall-clock timeout can kill ORCA and the MPI ranks it started (ASE's
``profile.run`` has no timeout). The ``.out`` file is parsed by ``parse_orca_output``.

ORCA needs to be called with its full path for parallel (``%pal``) runs, so the binary is resolved
to an absolute path: ``engine.orca.executable`` in the config, else the ``ORCA_BINARY`` environment
variable, else ``orca`` on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from pairfactory.errors import UserError
from pairfactory.qm.engines.base import (
    Deadline,
    Engine,
    EngineTimeout,
    Outcome,
    ScfFailure,
    Trace,
    require_positive_int,
    require_timeout,
)
from pairfactory.qm.records import SampleStatus

ORCA_BINARY_ENV = "ORCA_BINARY"

_VERSION_RE = re.compile(r"Program Version\s+(\S+)")
# Runs through ORCA's external-program interface (e.g. XTB2) print
# "FINAL SINGLE POINT ENERGY (From external program)  -5.07...".
_ENERGY_RE = re.compile(r"^FINAL SINGLE POINT ENERGY(?:\s*\([^)\n]*\))?\s+(-?\d+\.\d+)", re.M)
_CYCLE_RE = re.compile(r"GEOMETRY OPTIMIZATION CYCLE\s+(\d+)")
_COORDS_HEADER = "CARTESIAN COORDINATES (ANGSTROEM)"
_ATOM_LINE_RE = re.compile(r"^\s*([A-Za-z]{1,3})\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s*$")


@dataclass(frozen=True)
class OrcaSettings:
    """Config ``engine.orca``; the defaults are the schema's (tests/qm/test_settings.py)."""

    binary: str | None = None
    keywords: str = "B3LYP D3BJ def2-SVP Opt"
    nprocs: int | None = None  # %pal nprocs; None = the stage's threads
    maxcore_mb: int = 1000
    max_steps: int = 100  # %geom MaxIter
    extra_blocks: str = ""  # further %blocks, written verbatim after the generated ones
    keep_files: bool = False  # keep each run's scratch folder (for debugging)
    timeout_s: float | None = 3600.0

    def __post_init__(self) -> None:
        if not isinstance(self.keywords, str) or not self.keywords.strip():
            raise UserError(
                "engine.orca.keywords must be a non-empty string like 'XTB2 Opt', "
                f"got {self.keywords!r}"
            )
        # The engine reads ORCA's optimized geometry, so an optimization keyword is required
        # (Opt, LooseOpt, TightOpt, COpt, ...).
        if not any(token.lower().endswith("opt") for token in self.keywords.split()):
            raise UserError(
                f"engine.orca.keywords {self.keywords!r} has no optimization keyword: add 'Opt' "
                "(e.g. 'XTB2 Opt' or 'B97-3c Opt')"
            )
        if self.nprocs is not None:
            require_positive_int(self.nprocs, "engine.orca.nprocs")
        require_positive_int(self.maxcore_mb, "engine.orca.maxcore_mb")
        require_positive_int(self.max_steps, "engine.orca.max_steps")
        require_timeout(self.timeout_s, "engine.orca.timeout_s")


@dataclass
class OrcaOutput:
    """What the engine needs from an ORCA ``.out`` file."""

    version: str | None
    final_energy_hartree: float | None
    final_positions_angstrom: np.ndarray | None
    symbols: list[str]
    converged: bool
    n_cycles: int
    scf_failed: bool = False
    max_cycles_reached: bool = False
    terminated_normally: bool = False
    error_message: str = ""


def parse_orca_output(text: str) -> OrcaOutput:
    """Parse an ORCA 5/6 geometry-optimization output (also a truncated one, e.g. after a kill).

    The final geometry is the last ``CARTESIAN COORDINATES (ANGSTROEM)`` block (after
    ``FINAL ENERGY EVALUATION AT THE STATIONARY POINT`` for a converged run, else the last cycle's)
    and the final energy the last ``FINAL SINGLE POINT ENERGY``, which belongs to that geometry.
    """
    version_match = _VERSION_RE.search(text)
    energies = _ENERGY_RE.findall(text)
    cycles = [int(c) for c in _CYCLE_RE.findall(text)]
    symbols, positions = _last_coordinates_block(text)
    flat = " ".join(text.split())  # ORCA wraps its messages over lines at varying widths
    error_message = ""
    match = re.search(r"ORCA finished by error termination in (\S+)", text)
    if match:
        error_message = f"ORCA finished by error termination in {match.group(1)}"
    elif "ABORTING THE RUN" in text:
        error_message = "ORCA aborted the run"
    return OrcaOutput(
        version=version_match.group(1) if version_match else None,
        final_energy_hartree=float(energies[-1]) if energies else None,
        final_positions_angstrom=positions,
        symbols=symbols,
        converged="THE OPTIMIZATION HAS CONVERGED" in text,
        n_cycles=max(cycles) if cycles else 0,
        scf_failed=("SCF NOT CONVERGED AFTER" in text) or ("wavefunction IS NOT CONVERGED" in flat),
        max_cycles_reached="did not converge but reached the maximum number of optimization cycles"
        in flat,
        terminated_normally="ORCA TERMINATED NORMALLY" in text,
        error_message=error_message,
    )


def _last_coordinates_block(text: str) -> tuple[list[str], np.ndarray | None]:
    start = text.rfind(_COORDS_HEADER)
    if start < 0:
        return [], None
    lines = text[start:].splitlines()[1:]
    symbols: list[str] = []
    rows: list[list[float]] = []
    for line in lines:
        if set(line.strip()) <= {"-"} and not rows:
            continue  # the dashed underline of the header
        match = _ATOM_LINE_RE.match(line)
        if not match:
            break
        symbols.append(match.group(1))
        rows.append([float(match.group(2)), float(match.group(3)), float(match.group(4))])
    if not rows:
        return [], None
    return symbols, np.array(rows, dtype=np.float64)


def resolve_orca_binary(configured: str | None) -> str:
    """Absolute path of the ORCA binary, or one UserError that says how to configure it."""
    source = "engine.orca.executable"
    candidate = configured
    if not candidate and os.environ.get(ORCA_BINARY_ENV):
        candidate, source = os.environ[ORCA_BINARY_ENV], f"${ORCA_BINARY_ENV}"
    if not candidate:
        found = shutil.which("orca")
        if found:
            candidate, source = found, "PATH"
    how = (
        "set config key engine.orca.executable to the full "
        f"path of the orca executable, or the environment variable {ORCA_BINARY_ENV}, or put orca "
        "on PATH"
    )
    if not candidate:
        raise UserError(
            f"ORCA binary not found: engine.orca.executable is not set, ${ORCA_BINARY_ENV} is "
            f"empty and no `orca` on PATH; {how}"
        )
    resolved = shutil.which(candidate) if os.sep not in candidate else candidate
    if not resolved or not os.path.isfile(resolved) or not os.access(resolved, os.X_OK):
        raise UserError(
            f"ORCA binary {candidate!r} (from {source}) is not an executable file; {how}"
        )
    return os.path.abspath(resolved)


class OrcaEngine(Engine):
    name = "orca"

    def __init__(self, settings: OrcaSettings | None = None, threads: int = 1) -> None:
        self.settings = settings or OrcaSettings()
        super().__init__(threads=threads, default_timeout_s=self.settings.timeout_s)
        self.binary = resolve_orca_binary(self.settings.binary)
        self.method = self.settings.keywords
        # Known after the first run (parsed from the output header); ORCA has no cheap --version.
        self.version = "orca (version not yet read)"

    # Where ORCA lives, how many processes and how much memory it uses, and debug file keeping
    # do not change results either.
    settings_outside_tag = ("binary", "nprocs", "maxcore_mb", "keep_files", "timeout_s")

    def orca_blocks(self) -> str:
        s = self.settings
        nprocs = s.nprocs if s.nprocs is not None else self.threads
        blocks = [
            f"%pal nprocs {nprocs} end",
            f"%maxcore {s.maxcore_mb}",
            f"%geom MaxIter {s.max_steps} end",
        ]
        if s.extra_blocks.strip():
            blocks.append(s.extra_blocks.strip())
        return "\n".join(blocks)

    def _calculator(self, directory: Path, charge: int, multiplicity: int) -> Any:
        from ase.calculators.orca import ORCA, OrcaProfile

        return ORCA(
            profile=OrcaProfile(command=self.binary),
            directory=str(directory),
            charge=charge,
            mult=multiplicity,
            orcasimpleinput=self.settings.keywords,
            orcablocks=self.orca_blocks(),
        )

    def write_input(
        self,
        directory: Path,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int = 0,
        multiplicity: int = 1,
    ) -> tuple[Path, list[str]]:
        """Write ``orca.inp`` into ``directory``; return its path and the command that runs it
        there."""
        from ase import Atoms

        directory = Path(directory)
        calc = self._calculator(directory, charge, multiplicity)
        atoms = Atoms(
            numbers=np.asarray(atomic_numbers),
            positions=np.asarray(positions_angstrom, dtype=float),
        )
        calc.template.write_input(calc.profile, directory, atoms, calc.parameters, ["energy"])
        argv = calc.profile.get_command(calc.template.inputname)
        return directory / calc.template.inputname, [str(a) for a in argv]

    def _optimize(
        self,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int,
        multiplicity: int,
        deadline: Deadline,
        trace: Trace,
    ) -> Outcome:
        workdir = Path(tempfile.mkdtemp(prefix="pairfactory-orca-"))
        try:
            return self._run_in(
                workdir, atomic_numbers, positions_angstrom, charge, multiplicity, deadline, trace
            )
        finally:
            if not self.settings.keep_files:
                shutil.rmtree(workdir, ignore_errors=True)

    def _run_in(
        self,
        workdir: Path,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int,
        multiplicity: int,
        deadline: Deadline,
        trace: Trace,
    ) -> Outcome:
        _, argv = self.write_input(
            workdir, atomic_numbers, positions_angstrom, charge, multiplicity
        )
        out_path, err_path = workdir / "orca.out", workdir / "orca.err"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            # Own session = own process group: the kill below reaches mpirun and its ranks too.
            proc = subprocess.Popen(
                argv, cwd=workdir, stdout=out, stderr=err, env=env, start_new_session=True
            )
            try:
                returncode = proc.wait(timeout=deadline.remaining())
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                parsed = parse_orca_output(out_path.read_text(errors="replace"))
                self._record(parsed, trace)
                raise EngineTimeout(
                    f"wall-clock limit of {deadline.timeout_s:g} s reached; ORCA killed"
                ) from None
            except BaseException:
                _kill_group(proc)  # e.g. KeyboardInterrupt: never leave ORCA running
                raise
        parsed = parse_orca_output(out_path.read_text(errors="replace"))
        self._record(parsed, trace)
        if parsed.version:
            self.version = f"orca {parsed.version}"
        if parsed.scf_failed:
            raise ScfFailure(
                "ORCA: SCF not converged"
                + (f" ({parsed.error_message})" if parsed.error_message else "")
            )
        if returncode != 0 or parsed.error_message or parsed.final_energy_hartree is None:
            tail = err_path.read_text(errors="replace").strip()[-500:]
            problem = parsed.error_message or (
                f"ORCA exited with code {returncode}"
                if returncode != 0
                else "no FINAL SINGLE POINT ENERGY in the output"
            )
            return Outcome(
                False,
                parsed.final_energy_hartree,
                parsed.final_positions_angstrom,
                parsed.n_cycles,
                message=f"{problem}{'; stderr: ' + tail if tail else ''}",
                status=SampleStatus.error,
            )
        if parsed.final_positions_angstrom is None or len(parsed.final_positions_angstrom) != len(
            atomic_numbers
        ):
            return Outcome(
                False,
                parsed.final_energy_hartree,
                None,
                parsed.n_cycles,
                message="ORCA output has no final geometry with every atom",
                status=SampleStatus.error,
            )
        expected = [chemical_symbols[int(z)] for z in atomic_numbers]
        if [sym.capitalize() for sym in parsed.symbols] != expected:
            return Outcome(
                False,
                None,
                None,
                parsed.n_cycles,
                status=SampleStatus.error,
                message="ORCA output's final geometry has other elements than the input "
                "(wrong .out file?)",
            )
        message = ""
        if not parsed.converged:
            message = f"ORCA optimization not converged in {parsed.n_cycles} cycles" + (
                " (engine.orca.max_steps reached)" if parsed.max_cycles_reached else ""
            )
        return Outcome(
            parsed.converged,
            parsed.final_energy_hartree,
            parsed.final_positions_angstrom,
            parsed.n_cycles,
            message=message,
        )

    @staticmethod
    def _record(parsed: OrcaOutput, trace: Trace) -> None:
        if parsed.final_positions_angstrom is not None:
            trace.update(
                parsed.final_positions_angstrom, parsed.final_energy_hartree, parsed.n_cycles
            )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
