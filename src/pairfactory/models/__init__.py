"""Dual-graph solute–solvent models: ``build_model(name, **hparams)``.

Every model maps ``(solute_bg, solvent_bg)`` (DGL batched graphs from
``pairfactory.graphs.collate_pairs``) to ``ModelOutput(prediction [B], aux_loss scalar, aux)``;
train on ``mse(prediction, y) + aux_loss`` (``ModelOutput.loss(y)``). In ``eval()`` mode every
model runs its full, deterministic path. Seeding is the caller's job (``torch.manual_seed``
before ``build_model`` fixes the initial weights).

Checkpoints are weights only: ``torch.save(model.state_dict(), path)`` and
``build_model(name, **model.hparams).load_state_dict(torch.load(path, weights_only=True))``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pairfactory.errors import UserError
from pairfactory.graphs import ATOM_FEATURE_DIM, BOND_FEATURE_DIM
from pairfactory.models.attentivefp import AttentiveFP
from pairfactory.models.cgib import CGIB
from pairfactory.models.cigin import CIGIN
from pairfactory.models.layers import ModelOutput, PairModel

__all__ = ["MODEL_NAMES", "ModelOutput", "PairModel", "build_model", "default_hparams"]


def _cgib(**kw: Any) -> CGIB:
    return CGIB(contrastive=False, **kw)


def _cgib_contrastive(**kw: Any) -> CGIB:
    return CGIB(contrastive=True, **kw)


_FACTORIES: dict[str, tuple[Callable[..., PairModel], type[PairModel]]] = {
    "attentivefp": (AttentiveFP, AttentiveFP),
    "cigin": (CIGIN, CIGIN),
    "cgib": (_cgib, CGIB),
    "cgib_contrastive": (_cgib_contrastive, CGIB),
}
MODEL_NAMES: tuple[str, ...] = tuple(_FACTORIES)
# Fixed by the variant's name, so not accepted as a hyper-parameter.
_FIXED = {"cgib": {"contrastive"}, "cgib_contrastive": {"contrastive"}}


def default_hparams(name: str) -> dict[str, Any]:
    """The hyper-parameters ``name`` accepts, with their defaults (``node_in``/``edge_in`` excluded)."""
    _, cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters
    skip = {"self", "node_in", "edge_in"} | _FIXED.get(name, set())
    return {k: p.default for k, p in params.items() if k not in skip}


def build_model(
    name: str, node_in: int = ATOM_FEATURE_DIM, edge_in: int = BOND_FEATURE_DIM, **hparams: Any
) -> PairModel:
    """A freshly initialized model ``name`` (one of ``MODEL_NAMES``).

    Unknown hyper-parameter names raise ``UserError`` listing the accepted ones. ``node_in`` /
    ``edge_in`` default to the feature sizes of ``pairfactory.graphs``. Also accepts the
    ``model.hparams`` of a built model (its ``contrastive`` flag must match the name).
    """
    factory, _ = _lookup(name)
    accepted = default_hparams(name)
    given = dict(hparams)
    if "contrastive" in given and name in _FIXED:
        if bool(given.pop("contrastive")) != (name == "cgib_contrastive"):
            raise UserError(f"model {name!r}: contrastive={hparams['contrastive']} contradicts the model name")
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise UserError(
            f"model {name!r} has no hyper-parameter(s) {unknown}; it accepts {sorted(accepted)} "
            "(check the evaluate section of the config)"
        )
    try:
        return factory(node_in=node_in, edge_in=edge_in, **given)
    except ValueError as err:  # an invalid value (not a bug): say which model and how to fix it
        raise UserError(f"model {name!r}: invalid hyper-parameter value: {err}") from err


def _lookup(name: str) -> tuple[Callable[..., PairModel], type[PairModel]]:
    try:
        return _FACTORIES[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}") from None
