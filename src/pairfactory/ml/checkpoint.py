"""Resumable training: the whole state of a training run at the end of an epoch, in one file.

A job on a cluster can be killed at its time limit (or with ``kill -9``) at any moment. The
training loop writes this checkpoint every few minutes, atomically, so a rerun finds either the
previous complete checkpoint or the new one, never half a file. Restoring it puts back everything
the rest of the run depends on — weights, optimizer and scheduler state, the epoch and the learning
curve so far, the best weights, and every random number generator the loop draws from (Python,
NumPy, torch, the shuffle generator) — so a resumed run ends with the same numbers as an
uninterrupted one (``tests/models/test_checkpoint.py`` kills a run with SIGKILL and compares).

The file holds tensors, numbers, strings and containers only: it loads with
``torch.load(weights_only=True)``, which executes no pickled code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

# Bump when the layout of the file changes: an old checkpoint is then refused, not misread.
CHECKPOINT_FORMAT = 1


@dataclass
class TrainingState:
    """What a resumed run needs to continue exactly where the previous one stopped."""

    epoch: int  # the last finished epoch
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int
    best_valid_mse: float
    best_model: dict[str, Any]
    # what the run was started with; a checkpoint of other settings is not resumed
    fingerprint: dict[str, Any] = field(default_factory=dict)


def capture_rng(shuffle_generator: torch.Generator) -> dict[str, Any]:
    """Every generator the training loop draws from, as tensors and plain values."""
    import torch

    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [
            np_state[0],
            torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
        "shuffle": shuffle_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], shuffle_generator: torch.Generator) -> None:
    import torch

    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    shuffle_generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(state: TrainingState, path: str | Path) -> Path:
    """Write the checkpoint atomically (the previous one stays valid until the new one is
    complete)."""
    import torch

    payload = {
        "format": CHECKPOINT_FORMAT,
        "epoch": state.epoch,
        "model": {k: v.detach().to("cpu") for k, v in state.model.items()},
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "rng": state.rng,
        "history": state.history,
        "best_epoch": state.best_epoch,
        "best_valid_mse": state.best_valid_mse,
        "best_model": {k: v.detach().to("cpu") for k, v in state.best_model.items()},
        "fingerprint": state.fingerprint,
    }
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def load_training_state(path: str | Path, fingerprint: dict[str, Any]) -> TrainingState | None:
    """The checkpoint at ``path``, or None when there is none. A checkpoint written by other
    settings (another model, seed or data: ``fingerprint`` differs) or in another format is an
    error: resuming it would silently mix two runs."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for a bad file
        raise UserError(
            f"training checkpoint {path} cannot be read ({err}); delete it to start over"
        ) from err
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"training checkpoint {path} has format {payload.get('format')!r}, this version "
            f"writes {CHECKPOINT_FORMAT}; delete it to start over"
        )
    if payload["fingerprint"] != fingerprint:
        changed = sorted(
            k
            for k in set(payload["fingerprint"]) | set(fingerprint)
            if payload["fingerprint"].get(k) != fingerprint.get(k)
        )
        raise UserError(
            f"training checkpoint {path} belongs to a run with other settings "
            f"({', '.join(changed)} differ); delete it to start over with the new settings"
        )
    return TrainingState(
        epoch=int(payload["epoch"]),
        model=payload["model"],
        optimizer=payload["optimizer"],
        scheduler=payload["scheduler"],
        rng=payload["rng"],
        history=list(payload["history"]),
        best_epoch=int(payload["best_epoch"]),
        best_valid_mse=float(payload["best_valid_mse"]),
        best_model=payload["best_model"],
        fingerprint=payload["fingerprint"],
    )
