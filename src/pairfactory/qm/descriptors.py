"""Per-system descriptors of a dataset: the implicit-solvent ΔG_solv of each solute in its solvent
(``pairfactory solvation``).

For every system of the dataset's pair tables (all of them, not only the QM subset: one xtb single
point per molecule and solvent costs well under a second), the solute's isolated geometry comes
from the parts cache of the configured engine (optimized once per molecule and engine tag, as the
optimize stage does; computed here when missing), and GFN2-xTB/ALPB ΔG_solv from the xtb program
(``pairfactory.qm.solvation``, cached per molecule × solvent × xtb version). Solvents without
ALPB parameters give a missing value with status ``unparametrized``; the table also holds ΔG_solv's
four terms (``dg_elec_alpb_kcal_mol``, ``…_sasa_…``, ``…_hbond_…``, ``…_shift_…``). A failed part
or xtb run gives a missing value with its status and message. Systems in = rows out. Each row names
the engine tag of its geometry: a model that reads ALPB records it, and prediction
(``PairSolvation``) computes its pairs' values the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd

from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write
from pairfactory.pairs.smiles import molecule_key, readable_molecule_keys
from pairfactory.qm.parts import PartsCache
from pairfactory.qm.plan import load_systems
from pairfactory.qm.settings import QmSettings
from pairfactory.qm.solvation import STATUS_OK, TERM_FIELDS, SolvationCache, find_xtb

log = logging.getLogger(__name__)

# descriptor column of each term of ΔG_solv(ALPB) -> SolvationResult field
ALPB_TERMS = {f"dg_{term}_alpb_kcal_mol": field for term, field in TERM_FIELDS.items()}
ALPB_TERM_COLUMNS = tuple(ALPB_TERMS)
DESCRIPTOR_COLUMNS = (
    "system_id",
    "solute_smiles",
    "solvent_smiles",
    "alpb_solvent",
    "status",
    "dg_solv_alpb_kcal_mol",
    # its terms (they sum to it): electrostatic, surface area, hydrogen bonds, constant shift
    *ALPB_TERM_COLUMNS,
    "message",
    "xtb_version",
    "geometry_sha256",
    "engine_tag",
)
# Parquet metadata (DataFrame.attrs) of a table built for some solvents only: their SMILES. Readers
# name it when a pair they need is missing (ml.sample_sets keeps a copy of this name).
SELECTED_SOLVENTS_ATTR = "selected_solvents"

# The columns of one (solute, solvent) pair's ΔG_solv: DESCRIPTOR_COLUMNS less the system's keys.
PAIR_COLUMNS = DESCRIPTOR_COLUMNS[3:]


class PairSolvation:
    """ΔG_solv(ALPB) of a solute in a solvent, the one way the descriptor table and prediction
    compute it: the solute's isolated geometry from the parts cache of the engine (optimized
    there when missing), then one cached xtb single point (``SolvationCache``, one folder per
    engine tag, because the value belongs to the engine's geometry).

    ``require_program`` checks for the xtb binary now instead of at the first parametrized
    solvent (prediction fails before its first pair rather than midway). ``workers`` > 1 computes
    the pairs of ``table`` in that many processes, one solute (and all its solvents) per task, so
    that no molecule is optimized twice; the disk caches are shared (atomic writes). Solutes
    whose part and values are all cached are read here, without processes. The process pool
    starts at the first table with two solutes to compute and serves every later one (a file
    predicted in chunks starts it once); ``close`` ends it, as does the interpreter's exit."""

    def __init__(
        self,
        settings: QmSettings,
        parts_cache: str | Path,
        solvation_cache: str | Path,
        *,
        threads: int = 1,
        xtb_binary: str | None = None,
        require_program: bool = False,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise UserError(f"workers must be >= 1 (got {workers})")
        if require_program:
            find_xtb(xtb_binary)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._worker_args = (settings, parts_cache, solvation_cache, threads, xtb_binary)
        self.engine_tag = settings.engine_tag
        self.parts = PartsCache(
            parts_cache,
            lambda: settings.build_engine(threads),  # built for the first molecule not cached
            self.engine_tag,
            settings.timeout_s,
        )
        self.solvation = SolvationCache(
            Path(solvation_cache) / self.engine_tag, xtb_binary=xtb_binary
        )

    def get(self, solute_smiles: str, solvent_smiles: str) -> dict[str, Any]:
        """One pair's PAIR_COLUMNS; a failed part or xtb run is a missing value with its status
        and message, never an exception."""
        part = self.parts.get(solute_smiles)
        row: dict[str, Any] = {
            "alpb_solvent": None,
            "status": part.status,
            "dg_solv_alpb_kcal_mol": None,
            **dict.fromkeys(ALPB_TERM_COLUMNS),
            "message": part.message or None,
            "xtb_version": None,
            "geometry_sha256": None,
            "engine_tag": self.engine_tag,
        }
        if part.atomic_numbers is None or part.positions_angstrom is None:
            return row
        result = self.solvation.get(
            solute_smiles,
            solvent_smiles,
            part.atomic_numbers,
            part.positions_angstrom,
            charge=part.charge,
            uhf=part.multiplicity - 1,
        )
        row.update(
            alpb_solvent=result.alpb_solvent,
            status=result.status,
            dg_solv_alpb_kcal_mol=result.dg_solv_kcal_mol,
            **{column: getattr(result, field) for column, field in ALPB_TERMS.items()},
            message=result.message or None,
            xtb_version=result.xtb_version or None,
            geometry_sha256=result.geometry_sha256,
        )
        return row

    def table(
        self,
        solutes: Sequence[str],
        solvents: Sequence[str],
        *,
        progress: bool = False,
        desc: str = "ΔG_solv(ALPB)",
    ) -> pd.DataFrame:
        """PAIR_COLUMNS for each (solute, solvent), in order; each distinct pair computed once."""
        from tqdm.auto import tqdm

        pairs = list(zip(solutes, solvents, strict=True))
        unique = list(dict.fromkeys(pairs))
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        if self.workers > 1:
            by_solute: dict[str, list[str]] = {}
            for solute, solvent in unique:
                by_solute.setdefault(solute, []).append(solvent)
            # Only solutes with work left go to the processes: a chunk of known molecules is
            # read from the caches here, without a pool.
            pending = {a: b for a, b in by_solute.items() if self._needs_work(a, b)}
            if len(pending) > 1 or (pending and self._pool is not None):
                rows = self._in_processes(pending, progress, desc)
        # Here, one solute at a time in all its solvents, then forgotten: a long file predicted
        # in chunks keeps no molecule in memory (the disk cache has it), as the workers do.
        left = sorted((pair for pair in unique if pair not in rows), key=lambda pair: pair[0])
        for i, pair in enumerate(
            tqdm(
                left,
                desc=desc,
                unit="pair",
                disable=not progress or not left,
                mininterval=1.0,
                leave=False,
            )
        ):
            rows[pair] = self.get(*pair)
            if i + 1 == len(left) or left[i + 1][0] != pair[0]:
                self.parts.forget(pair[0])
        table = pd.DataFrame([rows[pair] for pair in pairs], columns=list(PAIR_COLUMNS))
        for column in ("dg_solv_alpb_kcal_mol", *ALPB_TERM_COLUMNS):
            table[column] = table[column].astype("float64")
        return table

    def close(self) -> None:
        """End the process pool, if one was started; a later table starts another."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> PairSolvation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _needs_work(self, solute: str, solvents: list[str]) -> bool:
        part = self.parts.cached(solute, peek=True)  # the worker loads it again, and counts it
        if part is None:
            return True
        if part.atomic_numbers is None:  # a failed part: its pairs are missing values
            return False
        return any(self.solvation.needs_run(solute, solvent) for solvent in solvents)

    def _in_processes(
        self, by_solute: dict[str, list[str]], progress: bool, desc: str
    ) -> dict[tuple[str, str], dict[str, Any]]:
        import multiprocessing

        from tqdm.auto import tqdm

        if self._pool is None:
            # spawn, not fork: the caller may hold torch's or OpenMP's threads, which fork
            # would copy
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=self._worker_args,
            )
        tasks = [self._pool.submit(_solve_solute, a, b) for a, b in by_solute.items()]
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        done = tqdm(
            as_completed(tasks),
            total=len(tasks),
            desc=desc,
            unit="solute",
            disable=not progress,
            mininterval=1.0,
            leave=False,
        )
        try:
            for task in done:
                solute, solved, counts = task.result()
                rows.update({(solute, b): row for b, row in solved.items()})
                self.parts.computed += counts[0]
                self.parts.loaded += counts[1]
                self.solvation.computed += counts[2]
                self.solvation.loaded += counts[3]
        except BaseException:
            # A failed task (a worker killed for memory, Ctrl-C) ends the pool, so that the next
            # table starts a sound one instead of meeting a broken pool.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise
        return rows


_WORKER: PairSolvation | None = None


def _start_worker(*args: Any) -> None:
    global _WORKER
    settings, parts_cache, solvation_cache, threads, xtb_binary = args
    _WORKER = PairSolvation(
        settings, parts_cache, solvation_cache, threads=threads, xtb_binary=xtb_binary
    )


def _solve_solute(
    solute: str, solvents: list[str]
) -> tuple[str, dict[str, dict[str, Any]], tuple[int, int, int, int]]:
    """One solute in all its solvents, in a worker: the rows and the cache counters' increments."""
    assert _WORKER is not None
    parts, solvation = _WORKER.parts, _WORKER.solvation
    before = (parts.computed, parts.loaded, solvation.computed, solvation.loaded)
    solved = {solvent: _WORKER.get(solute, solvent) for solvent in solvents}
    # A worker serves many chunks: it keeps no molecule in memory (the disk cache has it), and a
    # timed-out part is tried again by whichever worker meets it next.
    parts.forget(solute)
    after = (parts.computed, parts.loaded, solvation.computed, solvation.loaded)
    computed_parts, loaded_parts, computed_xtb, loaded_xtb = (b - a for a, b in zip(before, after))
    return solute, solved, (computed_parts, loaded_parts, computed_xtb, loaded_xtb)


def solvation_descriptors(
    settings: QmSettings,
    pairs_dir: str | Path,
    dataset: str,
    parts_cache: str | Path,
    solvation_cache: str | Path,
    *,
    threads: int = 1,
    xtb_binary: str | None = None,
    progress: bool = True,
    solvents: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per system of ``dataset`` (DESCRIPTOR_COLUMNS); with ``solvents`` (SMILES, compared
    as molecules), only the systems in those solvents: a dataset read only for its extra training
    pairs in one solvent needs no other."""
    systems = load_systems(pairs_dir, dataset)
    if solvents:
        systems = _in_solvents(systems, solvents, dataset)
    solvation = PairSolvation(
        settings, parts_cache, solvation_cache, threads=threads, xtb_binary=xtb_binary
    )
    values = solvation.table(
        systems["solute_smiles"],
        systems["solvent_smiles"],
        progress=progress,
        desc=f"solvation {dataset}",
    )
    keys = systems[["system_id", "solute_smiles", "solvent_smiles"]].reset_index(drop=True)
    table = pd.concat([keys, values], axis=1)[list(DESCRIPTOR_COLUMNS)]
    if len(table) != len(systems):  # systems in = rows out
        raise AssertionError(f"{len(systems)} systems in, {len(table)} descriptor rows out")
    if solvents:
        table.attrs[SELECTED_SOLVENTS_ATTR] = list(solvents)
    counts = table["status"].value_counts().to_dict()
    log.info(
        "%s: ΔG_solv(ALPB) for %d of %d systems; by status %s; xtb runs %d, cached %d",
        dataset,
        int((table["status"] == STATUS_OK).sum()),
        len(table),
        counts,
        solvation.solvation.computed,
        solvation.solvation.loaded,
    )
    return table


def _in_solvents(systems: pd.DataFrame, solvents: Sequence[str], dataset: str) -> pd.DataFrame:
    wanted = readable_molecule_keys(
        solvents, "--solvent, or evaluate.extra_pairs.solvents in the config"
    )
    keys = systems["solvent_smiles"].map(molecule_key)
    kept = systems[keys.isin(set(wanted))]
    present = set(keys)
    absent = [smiles for key, smiles in wanted.items() if key not in present]
    if absent:
        common = systems["solvent_smiles"].value_counts().index[:5].astype(str)
        raise UserError(
            f"dataset {dataset} has no system in solvent(s) {', '.join(absent)}; its most "
            f"frequent solvents are {', '.join(common)} (check --solvent, or "
            "evaluate.extra_pairs.solvents in the config)"
        )
    log.info(
        "%s: %d of its %d systems are in solvent(s) %s; the other %d are left out",
        dataset,
        len(kept),
        len(systems),
        ", ".join(wanted.values()),
        len(systems) - len(kept),
    )
    return kept


def write_descriptors(table: pd.DataFrame, out: str | Path) -> Path:
    out = Path(out)
    atomic_write(out, lambda tmp: table.to_parquet(tmp, index=False))
    return out
