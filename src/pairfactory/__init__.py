"""pairfactory: noisy QM geometry samples of solute–solvent pairs and graph models trained on
them.

    >>> from pairfactory import load_model
    >>> model = load_model("results/models/freesolv/dg_hydration_kcal_mol/probpair_2d")
    >>> model.predict(["CCO"], ["O"])  # doctest: +SKIP

``load_model`` is imported on first use, so ``import pairfactory`` stays light (no torch).
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("pairfactory")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from pairfactory.ml.predictor import load_model

        return load_model
    raise AttributeError(f"module 'pairfactory' has no attribute {name!r}")
