"""Every model name, the class it builds and the constructor arguments its name fixes.

``MODELS`` is the one list of model names: ``MODEL_NAMES``, the CLI's ``--model`` choices and the
report's variants derive from it, and a test holds the config schema's enums to it. The module is
light on purpose: a model's class (torch, dgl) is imported only when it is built or inspected, so
the CLI can offer the names without loading torch.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pairfactory.errors import UserError
from pairfactory.ml.datasets import input_names_for
from pairfactory.ml.featurize import ATOM_FEATURE_DIM, BOND_FEATURE_DIM

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pairfactory.ml.models.layers import PairModel


@dataclass(frozen=True)
class ModelSpec:
    """One model name: its class (``module``.``class_name``, imported on use) and the constructor
    arguments the name fixes (so they are not hyper-parameters of that name)."""

    module: str
    class_name: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    # trains on the QM samples of its training pairs (evaluate builds their supervision)
    uses_samples: bool = False

    def model_class(self) -> type[PairModel]:
        return getattr(importlib.import_module(self.module), self.class_name)


MODELS: dict[str, ModelSpec] = {
    "attentivefp": ModelSpec("pairfactory.ml.models.attentivefp", "AttentiveFP"),
    "cigin": ModelSpec("pairfactory.ml.models.cigin", "CIGIN"),
    "cgib": ModelSpec("pairfactory.ml.models.cgib", "CGIB", {"contrastive": False}),
    "cgib_contrastive": ModelSpec("pairfactory.ml.models.cgib", "CGIB", {"contrastive": True}),
    "probpair": ModelSpec("pairfactory.ml.models.probpair", "ProbPair", uses_samples=True),
    # the same model without any supervision from the QM samples: the 2D-only twin
    "probpair_2d": ModelSpec(
        "pairfactory.ml.models.probpair",
        "ProbPair",
        {"contact_weight": 0.0, "contrastive_weight": 0.0, "aux_weight": 0.0},
    ),
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; ``UserError`` listing the names for an unknown one."""
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}") from None


def default_hparams(name: str) -> dict[str, Any]:
    """The hyper-parameters ``name`` accepts, with their defaults (``node_in``/``edge_in`` and
    the arguments the name fixes excluded)."""
    spec = model_spec(name)
    params = inspect.signature(spec.model_class().__init__).parameters
    skip = {"self", "node_in", "edge_in"} | set(spec.fixed)
    return {k: p.default for k, p in params.items() if k not in skip}


def full_hparams(name: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Every constructor argument of ``name`` built with ``hparams``: the defaults, the given
    values, and what the name fixes."""
    spec = model_spec(name)
    return {**default_hparams(name), **hparams, **spec.fixed}


def model_input_names(name: str, hparams: Mapping[str, Any]) -> tuple[str, ...]:
    """The per-pair inputs besides the graphs (descriptor columns) that the model ``name`` built
    with ``hparams`` reads (``INPUT_SWITCHES``, off by default). Light: the workflow asks it while
    planning, without importing the model's class."""
    return input_names_for({**hparams, **model_spec(name).fixed})


def build_model(
    name: str, node_in: int = ATOM_FEATURE_DIM, edge_in: int = BOND_FEATURE_DIM, **hparams: Any
) -> PairModel:
    """A freshly initialized model ``name`` (one of ``MODEL_NAMES``).

    Unknown hyper-parameter names raise ``UserError`` listing the accepted ones. ``node_in`` /
    ``edge_in`` default to the feature sizes of ``pairfactory.ml.featurize``. Also accepts the
    ``model.hparams`` of a built model (an argument the name fixes, e.g. CGIB's ``contrastive``,
    must then agree with the name).
    """
    spec = model_spec(name)
    accepted = default_hparams(name)
    given = dict(hparams)
    for key, fixed in spec.fixed.items():
        if key not in given:
            continue
        value = given.pop(key)
        if (bool(value) if isinstance(fixed, bool) else value) != fixed:
            raise UserError(f"model {name!r}: {key}={value} contradicts the model name")
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise UserError(
            f"model {name!r} has no hyper-parameter(s) {unknown}; it accepts {sorted(accepted)} "
            "(check the evaluate section of the config)"
        )
    try:
        return spec.model_class()(node_in=node_in, edge_in=edge_in, **spec.fixed, **given)
    except ValueError as err:  # an invalid value (not a bug): say which model and how to fix it
        raise UserError(f"model {name!r}: invalid hyper-parameter value: {err}") from err
