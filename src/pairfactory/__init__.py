"""pairfactory: noisy QM geometry samples of solute–solvent pairs and graph models trained on
them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pairfactory")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
