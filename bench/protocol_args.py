"""The training-protocol flags shared by the bench scripts that run folds (CGIB's defaults)."""

from __future__ import annotations

import argparse

from pairfactory.ml.graph_cache import DEFAULT_GRAPH_CACHE
from pairfactory.ml.train import DEVICES, TrainSettings


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--epochs", type=int, default=TrainSettings.max_epochs, help="max epochs (CGIB: 500)"
    )
    parser.add_argument(
        "--patience", type=int, default=TrainSettings.patience, help="early stopping (CGIB: 50)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=TrainSettings.batch_size, help="CGIB: 256"
    )
    parser.add_argument("--lr", type=float, default=TrainSettings.lr, help="CGIB: 1e-3")
    parser.add_argument(
        "--standardize-targets",
        action="store_true",
        help="train on standardized targets (not in CGIB's protocol; see docs/results.md)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--graph-cache", default=str(DEFAULT_GRAPH_CACHE))


def train_settings(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        num_threads=args.threads,
        standardize_targets=args.standardize_targets,
    )
