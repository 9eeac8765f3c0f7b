"""The ``pairfactory`` command: a thin dispatcher over the pipeline stages.

Each stage module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file only
wires them to subcommands, so that a stage behaves the same from the CLI, Python and a rule.
The modules named here keep heavy imports (torch, dgl, rdkit, pyscf) inside ``run`` so that
``pairfactory --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pairfactory import __version__
from pairfactory.errors import UserError

# subcommand -> (module holding add_arguments/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "pairs": ("pairfactory.pairs.cli", "curate raw datasets into solute–solvent pair tables"),
    "plan": ("pairfactory.plan", "split pairs × samples into stable shards (prints or writes the plan)"),
    "samples": ("pairfactory.samples", "generate seeded random solute–solvent complexes for pairs"),
    "optimize": ("pairfactory.optimize", "optimize every sample of one shard with a QM engine"),
    "collect": ("pairfactory.collect", "validate shards, reconcile counts, write a manifest"),
    "export-xyz": ("pairfactory.shards", "export one pair's optimized samples to extended XYZ"),
    "featurize": ("pairfactory.graphs", "featurize pair tables into cached DGL graphs"),
    "evaluate": ("pairfactory.evaluate", "train and evaluate a model on one dataset/target/fold"),
    "report": ("pairfactory.report", "results tables and plots from evaluation outputs"),
}

EPILOG = """examples:
  pairfactory pairs --data-dir ../shared/data --out-dir results/pairs
  pairfactory optimize --help
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pairfactory",
        description="Noisy QM geometry samples of solute–solvent pairs and graph models trained on them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pairfactory {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        stage_parser = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(stage_parser)
        stage_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserError as err:
        print(f"pairfactory {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
