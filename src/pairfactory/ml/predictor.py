"""Predictions of a final model from two SMILES: ``load_model(dir).predict(solutes, solvents)``.

Every input pair gets one output row, in input order: a pair whose SMILES cannot be parsed or
featurized gets ``status`` ``rejected`` and a ``reason`` instead of a prediction, never an
exception that loses the batch. A prediction carries its uncertainty, σ, and an
``extrapolation`` flag with the reasons (:mod:`pairfactory.ml.applicability`). σ is the one that
``pairfactory evaluate`` scores (NLL, coverage): the members' own σ and their spread together
(:func:`predictive_sigma`), calibrated as a whole on the holdout, and growing with the solute's
novelty (1 − its similarity to the nearest training solute; ``SigmaCalibration``); an ensemble of
point-prediction models has its calibrated spread, a single point-prediction model none.

Columns of a prediction frame (``<target>`` is the model's target, e.g. ``dg_hydration_kcal_mol``,
whose name carries its unit): ``solute_smiles``, ``solvent_smiles`` (as given), ``status``,
``reason``, ``<target>``, ``<target>_sigma`` (σ, calibrated), ``<target>_ensemble_sigma`` (the
members' spread alone, uncalibrated; σ before calibration is √(members' mean variance +
spread²)), ``unit``, ``solute_similarity`` (Tanimoto to the nearest training solute),
``extrapolation``, ``applicability`` (the reasons, "; "-joined; empty inside the domain). A model
that reads per-pair inputs besides the graphs (``alpb_input``: ``dg_solv_alpb_kcal_mol``) adds a
column per input, the value it was given (NaN where there is none), and ``input_note`` (why one is
missing); the values come from the ``inputs`` provider given to :func:`load_model`
(`pairfactory predict` computes ALPB with the xtb program, as the training table was computed).
A missing input the model rarely saw missing in training (under ``RARE_MISSING_FRACTION`` of its
pairs) is an extrapolation.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairfactory.errors import InputFileError, UserError
from pairfactory.ml.applicability import (
    MoleculeFacts,
    TrainingDomain,
    domain_from_molecules,
    molecule_facts,
)
from pairfactory.ml.featurize import FeaturizationError, canonical_smiles, featurize_mol
from pairfactory.ml.model_dir import (
    MOLECULES_FILE,
    WEIGHTS_FILE,
    ModelCard,
    member_dir,
    read_card,
)
from pairfactory.ml.uncertainty import SigmaCalibration

log = logging.getLogger(__name__)
STATUS_OK, STATUS_REJECTED = "ok", "rejected"
# Molecules remembered between chunks of a file (graph + facts each, a few kB): a bound on memory
# for inputs with millions of distinct molecules.
MOLECULE_CACHE_LIMIT = 100_000
INFERENCE_BATCH = 2048
# A missing input is an extrapolation when fewer than this fraction of the training pairs lacked it
# (FreeSolv's ALPB: 4 %, a few odd SMILES); a model that often saw it missing (MNSol: the solvents
# xtb has no ALPB parameters for) learned what to do without it.
RARE_MISSING_FRACTION = 0.05

# (solutes, solvents) -> one row per pair: a float column per input name (NaN where there is
# none) and, optionally, ``status`` and ``message`` columns saying why a value is missing.
InputProvider = Callable[[list[str], list[str]], pd.DataFrame]


def combine_members(means: np.ndarray, stds: np.ndarray | None) -> dict[str, np.ndarray]:
    """Ensemble of members' predictions ``means`` (members × pairs) and σ ``stds`` (or None):
    ``y_pred`` the mean, ``y_std`` the model σ (root mean of the members' variances) when the
    members have one, ``y_std_ensemble`` the members' spread (population std) when there are
    several."""
    means = np.asarray(means, dtype=np.float64)
    out = {"y_pred": means.mean(axis=0)}
    if stds is not None:
        out["y_std"] = np.sqrt(np.mean(np.asarray(stds, dtype=np.float64) ** 2, axis=0))
    if means.shape[0] > 1:
        out["y_std_ensemble"] = means.std(axis=0)
    return out


def predictive_sigma(combined: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The uncalibrated predictive σ of members combined by :func:`combine_members`: their own
    variance plus their disagreement; their spread alone for point-prediction members; None for a
    single point-prediction model."""
    own, spread = combined.get("y_std"), combined.get("y_std_ensemble")
    if own is None:
        return spread
    return own if spread is None else np.sqrt(own**2 + spread**2)


@dataclass
class _Molecule:
    """One input SMILES after parsing: its graph and facts, or why it failed."""

    graph: Any = None
    canonical: str | None = None
    facts: MoleculeFacts | None = None
    similarity: float | None = None  # to the nearest training solute (solutes only)
    problem: str | None = None


class Predictor:
    """A loaded final model (see :func:`load_model`)."""

    def __init__(
        self,
        model_dir: Path,
        card: ModelCard,
        members: list[Any],
        domain: TrainingDomain,
        device: str = "cpu",
        inputs: InputProvider | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.card = card
        self.members = members
        self.domain = domain
        self.device = device
        self.inputs = inputs
        self._molecules: dict[tuple[str, str], _Molecule] = {}

    @property
    def input_names(self) -> list[str]:
        """The per-pair inputs the model reads besides the two graphs (none for most)."""
        return list(self.card.inputs["names"]) if self.card.inputs else []

    @property
    def target(self) -> str:
        return self.card.target

    @property
    def unit(self) -> str:
        return self.card.unit

    def columns(self) -> list[str]:
        t = self.target
        return [
            "solute_smiles",
            "solvent_smiles",
            "status",
            "reason",
            t,
            f"{t}_sigma",
            f"{t}_ensemble_sigma",
            "unit",
            "solute_similarity",
            "extrapolation",
            "applicability",
            *self.input_names,
            *(["input_note"] if self.input_names else []),
        ]

    def predict(self, solutes: Sequence[str], solvents: Sequence[str]) -> pd.DataFrame:
        """One row per (solute, solvent), in order; see the module docstring for the columns."""
        solutes, solvents = list(solutes), list(solvents)
        if len(solutes) != len(solvents):
            raise UserError(
                f"predict needs as many solutes as solvents (got {len(solutes)} and "
                f"{len(solvents)})"
            )
        t = self.target
        n = len(solutes)
        status = np.full(n, STATUS_OK, dtype=object)
        reason = np.full(n, "", dtype=object)
        applicability = np.full(n, "", dtype=object)
        similarity = np.full(n, np.nan)
        ok_rows: list[int] = []
        for row, (solute, solvent) in enumerate(zip(solutes, solvents, strict=True)):
            a, b = self._molecule(solute, "solute"), self._molecule(solvent, "solvent")
            problems = [
                f"{role}: {m.problem}" for role, m in (("solute", a), ("solvent", b)) if m.problem
            ]
            if problems:
                status[row], reason[row] = STATUS_REJECTED, "; ".join(problems)
                continue
            similarity[row] = a.similarity
            applicability[row] = "; ".join(self.domain.assess(a.facts, b.facts, a.similarity))
            ok_rows.append(row)
        values = {name: np.full(n, np.nan) for name in ("y_pred", "y_std", "y_std_ensemble")}
        input_values = np.full((n, len(self.input_names)), np.nan)
        input_note = np.full(n, "", dtype=object)
        if ok_rows:
            inputs = None
            if self.input_names:
                inputs, notes, rare = self._pair_inputs(
                    [self._molecule(solutes[r], "solute").canonical for r in ok_rows],
                    [self._molecule(solvents[r], "solvent").canonical for r in ok_rows],
                )
                input_values[ok_rows] = inputs
                input_note[ok_rows] = notes
                for row, note, flag in zip(ok_rows, notes, rare, strict=True):
                    if flag:
                        applicability[row] = "; ".join(filter(None, (applicability[row], note)))
            combined = self._infer(
                [self._molecule(solutes[r], "solute").graph for r in ok_rows],
                [self._molecule(solvents[r], "solvent").graph for r in ok_rows],
                similarity[ok_rows],
                inputs,
            )
            for name, array in combined.items():
                values[name][ok_rows] = array
        ok = status == STATUS_OK
        frame = pd.DataFrame(
            {
                "solute_smiles": pd.Series(solutes, dtype=object),
                "solvent_smiles": pd.Series(solvents, dtype=object),
                "status": status,
                "reason": reason,
                t: values["y_pred"],
                f"{t}_sigma": values["y_std"],
                f"{t}_ensemble_sigma": values["y_std_ensemble"],
                "unit": self.unit,
                "solute_similarity": similarity,
                "extrapolation": ok & (applicability != ""),
                "applicability": applicability,
            }
        )
        if self.input_names:
            for k, name in enumerate(self.input_names):
                frame[name] = input_values[:, k]
            frame["input_note"] = input_note
        return frame[self.columns()]

    def _pair_inputs(
        self, solutes: list[str], solvents: list[str]
    ) -> tuple[np.ndarray, list[str], list[bool]]:
        """The provider's values [n, k] of the model's inputs, a note per pair saying why one is
        missing, and whether that makes the pair an extrapolation (RARE_MISSING_FRACTION)."""
        assert self.inputs is not None  # load_model refuses a model that reads inputs without
        names = self.input_names
        table = self.inputs(solutes, solvents)
        absent = [name for name in names if name not in table.columns]
        if len(table) != len(solutes) or absent:
            raise AssertionError(
                f"the input provider returned {len(table)} rows for {len(solutes)} pairs, "
                f"without column(s) {absent}"
            )
        values = table[names].to_numpy(dtype=np.float64)
        record = self.card.inputs or {}
        trained_pairs = max(int(record.get("pairs", 0)), 1)
        missing_in_training = record.get("missing", {})
        notes, rare = [], []
        for i in range(len(table)):
            lacking = [name for k, name in enumerate(names) if np.isnan(values[i, k])]
            if not lacking:
                notes.append("")
                rare.append(False)
                continue
            why = ", ".join(
                text
                for column in ("status", "message")
                if column in table.columns
                and isinstance(text := table[column].iloc[i], str)
                and text
            )
            seen = {name: int(missing_in_training.get(name, 0)) for name in lacking}
            notes.append(
                f"no {', '.join(lacking)}" + (f" ({why})" if why else "") + "; the model saw it "
                f"missing in {min(seen.values())} of {trained_pairs} training pairs"
            )
            rare.append(min(seen.values()) < RARE_MISSING_FRACTION * trained_pairs)
        return values, notes, rare

    def _molecule(self, smiles: Any, role: str) -> _Molecule:
        key = (role, smiles if isinstance(smiles, str) else repr(smiles))
        found = self._molecules.get(key)
        if found is not None:
            return found
        if len(self._molecules) >= MOLECULE_CACHE_LIMIT:
            self._molecules.clear()
        molecule = _Molecule()
        try:
            if not isinstance(smiles, str):
                raise FeaturizationError(str(smiles), "empty or not a string")
            from rdkit import Chem, rdBase

            with rdBase.BlockLogs():  # a rejected row says why; RDKit's stderr lines add nothing
                canonical = canonical_smiles(smiles)
                mol = Chem.MolFromSmiles(canonical)
            molecule.graph = featurize_mol(mol, canonical)
            molecule.canonical = canonical
            molecule.facts = molecule_facts(mol)
            if role == "solute":
                molecule.similarity = self.domain.nearest_solute_similarity(molecule.facts)
        except FeaturizationError as err:
            molecule = _Molecule(problem=f"{err.problem} ({smiles!r})")
        self._molecules[key] = molecule
        return molecule

    def _infer(
        self,
        solutes: list[Any],
        solvents: list[Any],
        similarity: np.ndarray,
        inputs: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Means and σ of the pairs; ``similarity``: each solute's to its nearest training
        solute, which the calibrated σ grows with."""
        import dgl
        import torch

        means: list[np.ndarray] = []
        stds: list[np.ndarray] = []
        with torch.no_grad():
            for record, model in zip(self.card.members, self.members, strict=True):
                if hasattr(model, "encode_molecules"):
                    self._encode_unique(model, solutes, "solute")
                    self._encode_unique(model, solvents, "solvent")
                member_means, member_stds = [], []
                for start in range(0, len(solutes), INFERENCE_BATCH):
                    stop = start + INFERENCE_BATCH
                    graphs = (
                        dgl.batch(solutes[start:stop]).to(self.device),
                        dgl.batch(solvents[start:stop]).to(self.device),
                    )
                    if inputs is None:
                        out = model(*graphs)
                    else:
                        part = torch.as_tensor(inputs[start:stop], dtype=torch.float32)
                        out = model(*graphs, part.to(self.device))
                    member_means.append(
                        out.prediction.reshape(-1).to("cpu", torch.float64).numpy()
                        * record.target_std
                        + record.target_mean
                    )
                    if record.sigma_scale is not None:  # the member has a σ of its own
                        variance = out.variance.reshape(-1).to("cpu", torch.float64).numpy()
                        member_stds.append(np.sqrt(variance) * record.target_std)
                means.append(np.concatenate(member_means))
                if member_stds:
                    stds.append(np.concatenate(member_stds))
        combined = combine_members(np.stack(means), np.stack(stds) if stds else None)
        sigma = predictive_sigma(combined)
        combined.pop("y_std", None)  # the members' own σ alone is not what the card calibrated
        if sigma is not None and self.card.sigma_scale is not None:
            calibration = SigmaCalibration(self.card.sigma_scale, self.card.novelty_sigma or 0.0)
            combined["y_std"] = calibration.apply(sigma, similarity)
        return combined

    def _encode_unique(self, model: Any, graphs: list[Any], role: str) -> None:
        """Message passing once per unique molecule of ``graphs`` (this member's encoder), its
        result stored on the molecule's graph, where ``dgl.batch`` carries it into the pair batch
        and the model skips the encoder (the same numbers, computed once instead of once per
        pair)."""
        import dgl

        from pairfactory.ml.models.layers import ENCODED_KEYS

        unique = list({id(g): g for g in graphs}.values())
        for start in range(0, len(unique), INFERENCE_BATCH):
            part = unique[start : start + INFERENCE_BATCH]
            for graph in part:  # the previous member's features must not be batched in
                graph.ndata.pop(ENCODED_KEYS[role], None)
            encoded = model.encode_molecules(dgl.batch(part).to(self.device), role)
            sizes = [graph.num_nodes() for graph in part]
            for graph, features in zip(part, encoded.split(sizes), strict=True):
                graph.ndata[ENCODED_KEYS[role]] = features.to("cpu")

    def predict_file(
        self,
        input_path: str | Path,
        out_path: str | Path,
        solute_column: str,
        solvent_column: str,
        delimiter: str | None = None,
        chunk_rows: int = 50_000,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Stream a CSV through the model in chunks of ``chunk_rows`` (memory bounded by the
        chunk, not the file) into ``out_path`` (``.parquet`` or ``.csv``), one row per input row
        in input order, with the input's 0-based data row as ``row``. Returns the counts."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from tqdm.auto import tqdm

        from pairfactory.fileio import atomic_write

        input_path, out_path = Path(input_path), Path(out_path)
        if not input_path.is_file():
            raise InputFileError(input_path, "input file not found")
        kind = out_path.suffix.lower()
        if kind not in (".parquet", ".csv"):
            raise UserError(f"--out must end in .parquet or .csv (got {out_path})")
        if chunk_rows < 1:
            raise UserError("chunk_rows must be >= 1")
        started = time.perf_counter()
        counts = {"rows": 0, "ok": 0, "rejected": 0, "extrapolation": 0}
        total = _count_data_rows(input_path)

        def write(tmp: Path) -> None:
            writer = None
            try:
                with tqdm(
                    total=total, desc="predict", unit="pair", disable=not progress, smoothing=0.1
                ) as bar:
                    for chunk in _read_chunks(
                        input_path, solute_column, solvent_column, delimiter, chunk_rows
                    ):
                        frame = self.predict(chunk[solute_column], chunk[solvent_column])
                        frame.insert(
                            0, "row", np.arange(counts["rows"], counts["rows"] + len(frame))
                        )
                        counts["rows"] += len(frame)
                        counts["ok"] += int((frame["status"] == STATUS_OK).sum())
                        counts["rejected"] += int((frame["status"] == STATUS_REJECTED).sum())
                        counts["extrapolation"] += int(frame["extrapolation"].sum())
                        if kind == ".parquet":
                            table = pa.Table.from_pandas(frame, preserve_index=False)
                            if writer is None:
                                writer = pq.ParquetWriter(tmp, table.schema)
                            writer.write_table(table)
                        else:
                            frame.to_csv(tmp, mode="a", header=writer is None, index=False)
                            writer = writer or True
                        bar.update(len(frame))
                if writer is None:  # an input with a header and no row: an empty table
                    empty = self.predict([], [])
                    empty.insert(0, "row", np.arange(0))
                    if kind == ".parquet":
                        empty.to_parquet(tmp, index=False)
                    else:
                        empty.to_csv(tmp, index=False)
            finally:
                if writer is not None and writer is not True:
                    writer.close()

        atomic_write(out_path, write)
        if counts["rows"] != counts["ok"] + counts["rejected"]:  # nothing lost
            raise AssertionError(f"{counts}: rows != ok + rejected")
        counts["seconds"] = time.perf_counter() - started
        counts["pairs_per_s"] = counts["rows"] / max(counts["seconds"], 1e-9)
        return counts


def _count_data_rows(path: Path) -> int:
    """Lines after the header (for the progress bar; blank lines make it an upper bound)."""
    lines = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            lines += block.count(b"\n")
    with open(path, "rb") as handle:
        handle.seek(max(os.path.getsize(path) - 1, 0))
        if handle.read(1) not in (b"\n", b""):
            lines += 1  # no newline after the last line
    return max(lines - 1, 0)


def _read_chunks(
    path: Path, solute_column: str, solvent_column: str, delimiter: str | None, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """Chunks of the two SMILES columns as strings (empty cells stay empty strings, which the
    predictor rejects with a reason)."""
    try:
        reader = pd.read_csv(
            path,
            sep=delimiter if delimiter is not None else ",",
            usecols=lambda c: c in (solute_column, solvent_column),
            dtype=str,
            keep_default_na=False,
            chunksize=chunk_rows,
        )
        for chunk in reader:
            missing = [c for c in (solute_column, solvent_column) if c not in chunk.columns]
            if missing:
                header = pd.read_csv(path, sep=delimiter or ",", nrows=0).columns.tolist()
                raise UserError(
                    f"{path}: no column(s) {missing}; the file has {header}. Pass "
                    "--solute-column/--solvent-column (and --delimiter for a non-comma file)"
                )
            yield chunk
    except pd.errors.ParserError as err:
        raise InputFileError(path, f"not a readable CSV ({err}); check --delimiter") from err
    except pd.errors.EmptyDataError as err:
        raise InputFileError(path, "the file is empty (no header line)") from err


def load_model(
    model_dir: str | Path,
    device: str = "cpu",
    num_threads: int | None = None,
    min_solute_similarity: float | None = None,
    inputs: InputProvider | None = None,
) -> Predictor:
    """A final model folder (from `pairfactory train`) ready to predict.

    >>> model = load_model("results/models/freesolv/dg_hydration_kcal_mol/probpair_2d")
    >>> model.predict(["CCO"], ["O"])  # doctest: +SKIP

    A model that reads per-pair inputs (``card.inputs``, e.g. ALPB ΔG_solv) needs ``inputs``, the
    function that computes them (``InputProvider``); `pairfactory predict` builds it from the
    card with :func:`pairfactory.cli.predict.input_provider`.
    """
    import torch

    from pairfactory.ml.models import build_model
    from pairfactory.ml.models.registry import model_input_names
    from pairfactory.ml.train import load_weights, resolve_device

    model_dir = Path(model_dir)
    card = read_card(model_dir)
    if num_threads is not None and num_threads > 0:
        torch.set_num_threads(num_threads)
    device = resolve_device(device)
    hparams = dict(card.hparams)
    names = model_input_names(card.model, hparams)
    if names and (card.inputs is None or list(card.inputs.get("names", [])) != list(names)):
        raise UserError(
            f"{model_dir}: this {card.model} reads {', '.join(names)} for every pair, but its "
            "card does not say how they were computed (trained by an older pairfactory); "
            "retrain it with `pairfactory train`"
        )
    if names and inputs is None:
        raise UserError(
            f"{model_dir}: this {card.model} reads {', '.join(names)} for every pair; give "
            "load_model the function that computes them (inputs=, see "
            "pairfactory.cli.predict.input_provider), or use `pairfactory predict`, which does"
        )
    node_in = hparams.pop("node_in", card.featurization["atom_feature_dim"])
    edge_in = hparams.pop("edge_in", card.featurization["bond_feature_dim"])
    members = []
    for record in card.members:
        model = build_model(card.model, node_in=node_in, edge_in=edge_in, **hparams)
        load_weights(model, member_dir(model_dir, record.member) / WEIGHTS_FILE)
        members.append(model.to(device).eval())
    molecules_path = model_dir / MOLECULES_FILE
    if not molecules_path.is_file():
        raise UserError(f"{model_dir}: {MOLECULES_FILE} is missing; retrain the model")
    threshold = (
        min_solute_similarity
        if min_solute_similarity is not None
        else card.domain.get("min_solute_similarity")
    )
    domain = domain_from_molecules(pd.read_parquet(molecules_path), threshold)
    return Predictor(model_dir, card, members, domain, device, inputs if names else None)
