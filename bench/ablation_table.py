"""The ablation and dose-response table of our model: every variant against its 2D twin on the
same folds (paired; corrected resampled t-test), from one or more evaluate result folders.

A variant is named by what differs from the defaults: model hyper-parameters (a term switched off:
``contrastive_weight=0.0``) and sample-set settings (``max_samples_per_pair=2``,
``train_pair_fraction=0.25``, ``complex_hydrogens=true``), as in the report. Prints a Markdown table
with the per-fold RMSE of every variant.

example (the issue-10 ablation on FreeSolv-560, results/ablation/queue.sh):
  .venv/bin/python bench/ablation_table.py results/samples_contrast/evaluate \\
      results/samples_ablation/aux_only/evaluate results/ablation/*/evaluate
"""

from __future__ import annotations

import argparse
import sys

from pairfactory.ml.report import (
    ablation_markdown,
    ablation_table,
    collect_metrics,
    unmatched_note,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="+", help="evaluate result folders")
    args = parser.parse_args(argv)
    # one read of every folder: runs of one model trained differently get labels that tell them
    # apart; a fold linked into two folders counts once
    metrics = collect_metrics(args.results).drop_duplicates(
        subset=["dataset", "target", "split", "model", "repeat", "fold"]
    )
    table = ablation_table(metrics)
    unmatched = unmatched_note(table)
    if unmatched:
        print(unmatched + "\n")
    if table.empty:
        raise SystemExit(
            "no variant of probpair shares folds with a probpair_2d trained alike in these folders"
        )
    print(ablation_markdown(table))
    ours = metrics[metrics["base_model"].isin(["probpair", "probpair_2d"])].copy()
    # one column per fold of every repeat (a fold number alone would average the repeats)
    ours["fold_of_repeat"] = [f"r{r}-f{k}" for r, k in zip(ours["repeat"], ours["fold"])]
    folds = ours.pivot_table(index="model", columns="fold_of_repeat", values="rmse")
    folds["mean"] = folds.mean(axis=1)
    print(folds.round(3).to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
