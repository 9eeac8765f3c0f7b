"""Dual-graph solute–solvent models: ``build_model(name, **hparams)``.

Every model maps ``(solute_bg, solvent_bg)`` (DGL batched graphs from
``pairfactory.ml.datasets.collate_pairs``) to ``ModelOutput(prediction [B], aux_loss scalar,
aux)`` (``pairfactory.ml.models.layers``); train on ``mse(prediction, y) + aux_loss``
(``ModelOutput.loss(y)``). In ``eval()`` mode every model runs its full, deterministic path.
Seeding is the caller's job (``torch.manual_seed`` before ``build_model`` fixes the initial
weights).

Checkpoints are weights only: ``torch.save(model.state_dict(), path)`` and
``build_model(name, **model.hparams).load_state_dict(torch.load(path, weights_only=True))``.

Importing this package loads no torch: the names and the builder come from
``pairfactory.ml.models.registry``, which imports a model's class when it is built.
"""

from pairfactory.ml.models.registry import (
    MODEL_NAMES,
    MODELS,
    ModelSpec,
    build_model,
    default_hparams,
)

__all__ = ["MODELS", "MODEL_NAMES", "ModelSpec", "build_model", "default_hparams"]
