"""Implicit-solvent free energies of solvation (ΔG_solv) with the xtb program's GFN2-xTB/ALPB.

One single point ``xtb mol.xyz --gfn 2 --alpb <solvent> --chrg C --uhf U`` per (molecule, solvent)
at a given geometry (the optimized isolated molecule of the parts cache); ΔG_solv is the
``-> Gsolv`` line of xtb's summary (Eh), which includes the electrostatic (ALPB), surface-area,
hydrogen-bond and state-shift terms; those four are kept too (``dg_elec_kcal_mol`` …; they sum to
ΔG_solv), so that an analysis can ask whether a term carries what the total does not. The program
is used, not tblite's own ``alpb``: on 80 FreeSolv solutes tblite 0.4's ALPB correlated with
experiment at r ≈ 0.38 (it lacks the non-polar terms), the program's at r ≈ 0.79.

Results are cached on disk, one JSON file per (molecule SMILES, ALPB solvent, xtb version):
``{cache_dir}/xtb-{version}-alpb/{sha256(smiles TAB solvent)[:16]}.json``, written atomically.
Only successful runs are cached (a timeout depends on the machine, a failure may be transient).
Solvents xtb has no ALPB parameters for give a result with ``status == "unparametrized"`` and no
value, without running xtb: a missing value is an expected outcome, not an error.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write_text
from pairfactory.units import HARTREE_TO_KCAL_PER_MOL

log = logging.getLogger(__name__)

# 2: the four terms of ΔG_solv are recorded (format-1 entries lack them and are recomputed)
SOLVATION_CACHE_FORMAT = 2
DEFAULT_SOLVATION_CACHE = Path("results/solvation")
DEFAULT_XTB_BINARY = "xtb"
DEFAULT_TIMEOUT_S = 300.0
METHOD = "GFN2-xTB/ALPB"

# xtb 6.5's ALPB solvents (`man xtb`, and the names its binary accepts: "hexandecane" in the man
# page is rejected as "not parametrized", "hexadecane" is accepted) keyed by a SMILES of the
# solvent; the keys are canonicalized with RDKit before use. Octanol: the dry-solvent parameters
# ("octanol"), because the SMILES names the pure solvent; xtb's "woctanol" (water-saturated octanol)
# has no SMILES of its own.
ALPB_SOLVENT_SMILES: dict[str, str] = {
    "CC(C)=O": "acetone",
    "CC#N": "acetonitrile",
    "Nc1ccccc1": "aniline",
    "O=Cc1ccccc1": "benzaldehyde",
    "c1ccccc1": "benzene",
    "ClCCl": "ch2cl2",
    "ClC(Cl)Cl": "chcl3",
    "S=C=S": "cs2",
    "C1COCCO1": "dioxane",
    "CN(C)C=O": "dmf",
    "CS(C)=O": "dmso",
    "CCOCC": "ether",
    "CCOC(C)=O": "ethylacetate",
    "c1ccoc1": "furane",
    "CCCCCCCCCCCCCCCC": "hexadecane",
    "CCCCCC": "hexane",
    "CO": "methanol",
    "C[N+](=O)[O-]": "nitromethane",
    "CCCCCCCCO": "octanol",
    "Oc1ccccc1": "phenol",
    "Cc1ccccc1": "toluene",
    "C1CCOC1": "thf",
    "O": "water",
}
ALPB_SOLVENT_NAMES: frozenset[str] = frozenset(ALPB_SOLVENT_SMILES.values()) | {"woctanol"}

STATUS_OK = "ok"
STATUS_UNPARAMETRIZED = "unparametrized"
STATUS_FAILED = "failed"
STATUS_TIMEOUT = "timeout"


def _summary_line(name: str) -> re.Pattern[str]:
    """The value (Eh) of one ``:: -> NAME  value Eh ::`` line of xtb's summary."""
    return re.compile(r"::\s*->\s*" + name + r"\s+(-?\d+\.\d+(?:[eE][-+]?\d+)?)\s+Eh")


_GSOLV_RE = _summary_line("Gsolv")
# The terms of Gsolv in xtb's summary, under it (``::    -> Gelec  -0.0076 Eh  ::``), and the
# SolvationResult field of each
TERM_LINES = {"elec": "Gelec", "sasa": "Gsasa", "hbond": "Ghb", "shift": "Gshift"}
TERM_FIELDS = {term: f"dg_{term}_kcal_mol" for term in TERM_LINES}
_TERM_RES = {term: _summary_line(line) for term, line in TERM_LINES.items()}
_TOTAL_RE = re.compile(r"::\s*total energy\s+(-?\d+\.\d+(?:[eE][-+]?\d+)?)\s+Eh")
_VERSION_RE = re.compile(r"xtb version\s+(\S+)")
_STATE_RE = re.compile(r"Reference state\s+(.+?)\s*$", re.MULTILINE)


@dataclass
class SolvationResult:
    """ΔG_solv of one molecule in one implicit solvent (None where there is no value)."""

    smiles: str
    solvent_smiles: str
    alpb_solvent: str | None
    status: str  # ok, unparametrized, failed, timeout
    dg_solv_hartree: float | None
    dg_solv_kcal_mol: float | None
    total_energy_hartree: float | None  # in solution, at the given geometry
    charge: int
    uhf: int
    n_atoms: int
    geometry_sha256: str  # of the XYZ text xtb was given: which geometry the value belongs to
    method: str
    reference_state: str
    xtb_version: str
    wall_time_s: float
    message: str
    # ΔG_solv's terms: electrostatic (ALPB), surface area (non-polar), hydrogen bonds, and the
    # solvent's constant shift with the reference state; None where xtb printed none
    dg_elec_kcal_mol: float | None = None
    dg_sasa_kcal_mol: float | None = None
    dg_hbond_kcal_mol: float | None = None
    dg_shift_kcal_mol: float | None = None
    format: int = SOLVATION_CACHE_FORMAT
    # Not stored: True when this object was read from the cache rather than computed now.
    from_cache: bool = False


@functools.cache
def _canonical(smiles: str) -> str | None:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


@functools.cache
def _canonical_solvent_map() -> dict[str, str]:
    mapping = {}
    for smiles, name in ALPB_SOLVENT_SMILES.items():
        canonical = _canonical(smiles)
        assert canonical is not None, smiles
        mapping[canonical] = name
    return mapping


def alpb_solvent_name(solvent_smiles: str) -> str | None:
    """xtb's ALPB name for a solvent SMILES (any valid spelling), or None if xtb has none."""
    canonical = _canonical(solvent_smiles)
    if canonical is None:
        return None
    return _canonical_solvent_map().get(canonical)


def find_xtb(binary: str | os.PathLike[str] | None = None) -> Path:
    """The xtb executable (``binary`` as a path or a name on PATH), or a UserError saying how to
    install it."""
    name = str(binary) if binary is not None else DEFAULT_XTB_BINARY
    found = shutil.which(name)
    if found is None:
        raise UserError(
            f"the xtb program was not found ({name!r} is not an executable file or on PATH); "
            "ΔG_solv (GFN2-xTB/ALPB) needs it: install it with `apt-get install xtb` "
            "(Debian/Ubuntu) or `conda install -c conda-forge xtb`, or point the xtb binary "
            "setting at it"
        )
    return Path(found)


@functools.cache
def _xtb_version_of(path: str) -> str:
    try:
        proc = subprocess.run(
            [path, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            env=_xtb_env(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"could not run {path} --version: {err}") from err
    match = _VERSION_RE.search(proc.stdout + proc.stderr)
    if match is None:
        raise UserError(f"{path} --version printed no 'xtb version': is it the xtb program?")
    return match.group(1)


def xtb_version(binary: str | os.PathLike[str] | None = None) -> str:
    """The version string xtb prints (e.g. ``6.5.1``); part of the cache key."""
    return _xtb_version_of(str(find_xtb(binary)))


def _xtb_env() -> dict[str, str]:
    env = dict(os.environ)
    # One thread per run: the callers parallelize over molecules (if at all), and on a shared
    # machine OpenMP's spinning threads cost more than they give for molecules this small.
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
            "OMP_STACKSIZE": env.get("OMP_STACKSIZE", "500M"),
        }
    )
    return env


def xyz_text(atomic_numbers: Sequence[int], positions_angstrom: Sequence[float]) -> str:
    """XYZ file text; ``positions_angstrom`` flattened (x0, y0, z0, x1, ...) or N × 3."""
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    xyz = np.asarray(positions_angstrom, dtype=float).reshape(-1)
    if xyz.size != 3 * len(atomic_numbers):
        raise ValueError(f"{len(atomic_numbers)} atoms but {xyz.size} coordinates")
    lines = [str(len(atomic_numbers)), ""]
    for z, (x, y, w) in zip(atomic_numbers, xyz.reshape(-1, 3), strict=True):
        lines.append(f"{table.GetElementSymbol(int(z)):<2} {x:18.10f} {y:18.10f} {w:18.10f}")
    return "\n".join(lines) + "\n"


class SolvationCache:
    """ΔG_solv results on disk, one JSON file per (SMILES, ALPB solvent, xtb version).

    ``computed`` / ``loaded`` count xtb runs and cache hits (tests and logs use them).
    """

    def __init__(
        self,
        root: str | Path = DEFAULT_SOLVATION_CACHE,
        *,
        xtb_binary: str | os.PathLike[str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.root = Path(root)
        self.xtb_binary = xtb_binary
        self.timeout_s = timeout_s
        self.computed = 0
        self.loaded = 0
        self._xtb: Path | None = None
        self._version: str | None = None
        self._told_format = False

    def _program(self) -> tuple[Path, str]:
        # Resolved on first use, so that a cache of unparametrized solvents needs no binary.
        if self._xtb is None or self._version is None:
            self._xtb = find_xtb(self.xtb_binary)
            self._version = _xtb_version_of(str(self._xtb))
        return self._xtb, self._version

    def path_for(self, smiles: str, alpb_solvent: str, version: str) -> Path:
        key = hashlib.sha256(f"{smiles}\t{alpb_solvent}".encode()).hexdigest()[:16]
        return self.root / f"xtb-{version}-alpb" / f"{key}.json"

    def needs_run(self, smiles: str, solvent_smiles: str) -> bool:
        """Whether ``get`` would run xtb: a parametrized solvent with no cached result, or one
        of an older format (a file that proves unreadable is found out, and recomputed, by
        ``get``)."""
        alpb = alpb_solvent_name(solvent_smiles)
        if alpb is None:
            return False
        path = self.path_for(smiles, alpb, self._program()[1])
        if not path.is_file():
            return True
        try:
            return json.loads(path.read_text()).get("format") != SOLVATION_CACHE_FORMAT
        except (OSError, ValueError, AttributeError):
            return False

    def get(
        self,
        smiles: str,
        solvent_smiles: str,
        atomic_numbers: Sequence[int],
        positions_angstrom: Sequence[float],
        *,
        charge: int = 0,
        uhf: int = 0,
    ) -> SolvationResult:
        """ΔG_solv of ``smiles`` (at the given geometry) in ``solvent_smiles``, cached.

        ``uhf`` is the number of unpaired electrons (multiplicity − 1).
        """
        alpb = alpb_solvent_name(solvent_smiles)
        n_atoms = len(atomic_numbers)
        xyz = xyz_text(atomic_numbers, positions_angstrom)
        geometry_sha = hashlib.sha256(xyz.encode()).hexdigest()
        if alpb is None:
            return SolvationResult(
                smiles=smiles,
                solvent_smiles=solvent_smiles,
                alpb_solvent=None,
                status=STATUS_UNPARAMETRIZED,
                dg_solv_hartree=None,
                dg_solv_kcal_mol=None,
                total_energy_hartree=None,
                charge=charge,
                uhf=uhf,
                n_atoms=n_atoms,
                geometry_sha256=geometry_sha,
                method=METHOD,
                reference_state="",
                xtb_version="",
                wall_time_s=0.0,
                message=f"xtb has no ALPB parameters for solvent {solvent_smiles}",
            )
        xtb, version = self._program()
        path = self.path_for(smiles, alpb, version)
        cached = self._load(path, smiles, alpb, version)
        if cached is not None:
            self.loaded += 1
            # The caller's solvent spelling, not the first caller's.
            cached.solvent_smiles = solvent_smiles
            return cached
        result = run_xtb_alpb(
            xyz,
            alpb,
            smiles=smiles,
            solvent_smiles=solvent_smiles,
            charge=charge,
            uhf=uhf,
            xtb=xtb,
            version=version,
            timeout_s=self.timeout_s,
        )
        self.computed += 1
        if result.status == STATUS_OK:
            record = asdict(result)
            del record["from_cache"]
            atomic_write_text(path, json.dumps(record, sort_keys=True))
        return result

    def _load(self, path: Path, smiles: str, alpb: str, version: str) -> SolvationResult | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            known = {f.name for f in fields(SolvationResult)}
            result = SolvationResult(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError) as err:
            log.warning("solvation cache %s is unreadable (%s); recomputing it", path, err)
            return None
        result.format = data.get("format")  # an entry without one is no current entry
        if result.format != SOLVATION_CACHE_FORMAT:
            if not self._told_format:  # once: an upgrade meets every entry of the old format
                log.info(
                    "solvation cache %s holds entries of format %s; this version writes format "
                    "%d (ΔG_solv's terms added) and recomputes them",
                    self.root,
                    result.format,
                    SOLVATION_CACHE_FORMAT,
                )
                self._told_format = True
            return None
        if result.smiles != smiles or result.alpb_solvent != alpb or result.xtb_version != version:
            log.warning("solvation cache %s holds another key; recomputing it", path)
            return None
        result.from_cache = True
        return result


def run_xtb_alpb(
    xyz: str,
    alpb_solvent: str,
    *,
    smiles: str,
    solvent_smiles: str,
    charge: int,
    uhf: int,
    xtb: Path,
    version: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SolvationResult:
    """One xtb GFN2/ALPB single point in a temporary folder (xtb writes several files into its
    working directory); never raises for a failed run, the status says what happened."""
    start = time.monotonic()
    n_atoms = int(xyz.split("\n", 1)[0])
    geometry_sha = hashlib.sha256(xyz.encode()).hexdigest()

    def result(status: str, message: str, out: str = "") -> SolvationResult:
        gsolv = _GSOLV_RE.search(out)
        total = _TOTAL_RE.search(out)
        state = _STATE_RE.search(out)
        dg = float(gsolv.group(1)) if gsolv and status == STATUS_OK else None
        terms = {}
        for term, pattern in _TERM_RES.items():
            match = pattern.search(out) if dg is not None else None
            terms[TERM_FIELDS[term]] = (
                float(match.group(1)) * HARTREE_TO_KCAL_PER_MOL if match else None
            )
        return SolvationResult(
            smiles=smiles,
            solvent_smiles=solvent_smiles,
            alpb_solvent=alpb_solvent,
            status=status,
            dg_solv_hartree=dg,
            dg_solv_kcal_mol=None if dg is None else dg * HARTREE_TO_KCAL_PER_MOL,
            total_energy_hartree=float(total.group(1)) if total and status == STATUS_OK else None,
            charge=charge,
            uhf=uhf,
            n_atoms=n_atoms,
            geometry_sha256=geometry_sha,
            method=METHOD,
            reference_state=state.group(1) if state else "",
            xtb_version=version,
            wall_time_s=time.monotonic() - start,
            message=message,
            **terms,
        )

    with tempfile.TemporaryDirectory(prefix="pairfactory-xtb-") as tmp:
        (Path(tmp) / "mol.xyz").write_text(xyz)
        command = [
            str(xtb),
            "mol.xyz",
            "--gfn",
            "2",
            "--alpb",
            alpb_solvent,
            "--chrg",
            str(charge),
            "--uhf",
            str(uhf),
            "--norestart",
        ]
        try:
            proc = subprocess.run(
                command,
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=_xtb_env(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return result(STATUS_TIMEOUT, f"xtb ran longer than {timeout_s} s")
        out = proc.stdout
        if proc.returncode != 0 or _GSOLV_RE.search(out) is None:
            errors = [ln.strip() for ln in (out + proc.stderr).splitlines() if "-1-" in ln]
            detail = errors[-1] if errors else (proc.stderr.strip().splitlines() or [""])[-1]
            return result(STATUS_FAILED, f"xtb exit {proc.returncode}: {detail}", out)
        return result(STATUS_OK, "", out)
