"""The ``pairfactory`` command: one subcommand per pipeline stage, shared flags defined once.

Each module ``pairfactory.cli.<stage>`` declares ``PARENTS`` (which shared flags it takes, from
``SHARED_FLAGS``), ``add_arguments(parser)`` for its own flags and ``run(args) -> int``. Those
modules are light: they parse settings at the edge (config file → typed settings) and import the
stage's code inside ``run``, so ``pairfactory --help`` loads no torch, dgl, rdkit or pyscf, and a
subcommand imports only its own stage.

Conventions, the same for every subcommand:
- ``--config PATH``: the workflow config; optional everywhere, keys left out (or no file at all)
  take the schema defaults (``pairfactory.config``).
- ``--out PATH`` is always a file, ``--out-dir DIR`` always a folder.
- ``--log PATH``: also write the log to this file (one log per job in the workflow).
- ``--no-progress``: log lines only, no progress bar.
- ``--pairs-dir DIR``: the folder of pair tables, ``results/pairs`` by default.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pairfactory import __version__
from pairfactory.errors import UserError

log = logging.getLogger(__name__)

# subcommand -> one-line help; its module is ``pairfactory.cli.<name with - as _>``
SUBCOMMANDS: dict[str, str] = {
    "pairs": "curate raw datasets into solute–solvent pair tables",
    "plan": "split pairs × samples into stable shards (prints or writes the plan)",
    "samples": "generate seeded random solute–solvent complexes for pairs",
    "optimize": "optimize every sample of one shard with a QM engine",
    "collect": "validate shards, reconcile counts, write a manifest",
    "export-xyz": "export one pair's optimized samples to extended XYZ",
    "solvation": "implicit-solvent ΔG_solv (xtb ALPB) of every system of a dataset",
    "featurize": "featurize pair tables into cached DGL graphs",
    "evaluate": "train and evaluate a model on one dataset/target/fold",
    "train": "train a final model (or an ensemble) on a whole pair table",
    "predict": "predict from two SMILES or a CSV of pairs with a final model",
    "report": "results tables and plots from evaluation outputs",
}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_PAIRS_DIR = Path("results/pairs")

EPILOG = """examples:
  pairfactory pairs --data-dir ../shared/data --out-dir results/pairs
  pairfactory optimize --help
"""


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="workflow config (config.yaml); keys left out take the schema defaults "
        "(default: no file, schema defaults only)",
    )


def _add_log(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log", type=Path, default=None, metavar="PATH", help="also write the log here"
    )


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (log lines only)"
    )


def _add_pairs_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pairs-dir",
        type=Path,
        default=DEFAULT_PAIRS_DIR,
        metavar="DIR",
        help="folder of pair tables written by `pairfactory pairs` (default: %(default)s)",
    )


# The one definition of each shared flag; a subcommand lists the ones it takes in PARENTS.
SHARED_FLAGS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "config": _add_config,
    "log": _add_log,
    "progress": _add_progress,
    "pairs_dir": _add_pairs_dir,
}


def load_config_arg(args: argparse.Namespace) -> dict[str, Any]:
    """The validated config of ``--config`` (schema defaults filled), or the defaults alone."""
    from pairfactory.config import default_config, load_config

    path = getattr(args, "config", None)
    return load_config(path) if path is not None else default_config()


def module_for(command: str) -> Any:
    return importlib.import_module(f"pairfactory.cli.{command.replace('-', '_')}")


def _parent(name: str) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    SHARED_FLAGS[name](parent)
    return parent


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or with ``only`` that one imported (what ``main`` does)."""
    parser = argparse.ArgumentParser(
        prog="pairfactory",
        description=(
            "Noisy QM geometry samples of solute–solvent pairs and graph models trained on them."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pairfactory {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)  # listed in the help, not imported
            continue
        module = module_for(name)
        stage_parser = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[_parent(flag) for flag in module.PARENTS],
        )
        module.add_arguments(stage_parser)
        stage_parser.set_defaults(_run=module.run)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    for token in argv:
        if token in SUBCOMMANDS:
            return token
        if not token.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_chosen_command(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with log_file(getattr(args, "log", None)):
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserError as err:
        print(f"pairfactory {args.command}: error: {err}", file=sys.stderr)
        return 2


@contextmanager
def log_file(path: str | Path | None) -> Iterator[None]:
    """Also write the root logger's INFO records to ``path`` for the duration of the block."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


if __name__ == "__main__":
    sys.exit(main())
