"""Hyper-parameter selection on validation data: a grid of model settings, each run over the same
folds, and the setting with the lowest mean validation RMSE chosen.

The test RMSE of every setting is kept beside it, but it never takes part in the choice: the
number to report for the chosen setting is its test RMSE, and it is unbiased only because the
choice looked at validation folds alone. Layout (``bench/select_hparams.py`` writes it)::

    <root>/<dataset>/<target>/<model>@<setting>/<split>/r<repeat>-f<fold>/metrics.json

where ``<setting>`` is :func:`setting_label` of the grid point, e.g. ``cgib@beta=0.001``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pairfactory.errors import InputFileError, UserError
from pairfactory.ml.models import default_hparams
from pairfactory.ml.models.registry import full_hparams, model_spec

SETTING_SEPARATOR = "@"


def parse_grid(text: str) -> dict[str, list[Any]]:
    """``'{"beta": [1, 0.1], "tau": [1]}'`` -> a grid; every value must be a non-empty list."""
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"--grid must be a JSON object of lists, e.g. '{{\"beta\": [1, 0.1, 0.01]}}' ({err})"
        ) from err
    if not isinstance(grid, dict) or not grid:
        raise UserError(
            "--grid must be a non-empty JSON object of lists, e.g. '{\"beta\": [1, 0.1, 0.01]}'"
        )
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"--grid: {name!r} needs a non-empty list of values (got {values!r})")
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's order (names sorted for stable
    labels)."""
    names = sorted(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[name] for name in names))]


def setting_label(model: str, hparams: Mapping[str, Any]) -> str:
    """Folder-safe name of one grid point: ``cgib@beta=0.001`` (``cgib`` alone for an empty
    point)."""
    if not hparams:
        return model
    parts = [f"{name}={json.dumps(hparams[name]).strip(chr(34))}" for name in sorted(hparams)]
    return model + SETTING_SEPARATOR + ",".join(parts)


# Sizes that default to "follow the input" (None) and are recorded resolved: at their default when
# they equal the size they follow.
_SIZE_DEFAULTS = {"hidden_dim": "node_in", "edge_hidden_dim": "edge_in"}
_NOT_SETTINGS = {"node_in", "edge_in", "contrastive"}  # fixed by the data or by the model's name


def non_default_hparams(model: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded hyper-parameters of a fold (``metrics.json`` ``hparams``) that differ from the
    model's defaults: what makes two folds of one model name different models. Settings of a part
    the others switch off (``PairModel.inert_hparams``) make no difference."""
    defaults = default_hparams(model)
    inert = model_spec(model).model_class().inert_hparams(full_hparams(model, hparams))
    changed: dict[str, Any] = {}
    for name, value in hparams.items():
        if name in _NOT_SETTINGS or name not in defaults or name in inert:
            continue
        default = defaults[name]
        if default is None and name in _SIZE_DEFAULTS:
            default = hparams.get(_SIZE_DEFAULTS[name], value)
        normal = list(value) if isinstance(value, (list, tuple)) else value
        if normal != (list(default) if isinstance(default, (list, tuple)) else default):
            changed[name] = value
    return changed


@dataclass(frozen=True)
class SettingSummary:
    """One grid point over the folds it has finished."""

    label: str
    hparams: dict[str, Any]
    folds: int
    valid_rmse: float  # mean over folds: the selection criterion
    test_rmse: float  # mean over folds: reported, never used to choose
    test_rmse_std: float
    best_epoch: float


def summarize_settings(
    fold_metrics: Sequence[Mapping[str, Any]], labels: Mapping[str, dict[str, Any]]
) -> list[SettingSummary]:
    """Group fold metrics (each with a ``setting`` key naming its grid point) by grid point."""
    frame = pd.DataFrame(list(fold_metrics))
    rows: list[SettingSummary] = []
    for label, hparams in labels.items():
        part = frame[frame["setting"] == label] if len(frame) else frame
        if part.empty:
            rows.append(
                SettingSummary(label, dict(hparams), 0, math.nan, math.nan, math.nan, math.nan)
            )
            continue
        rows.append(
            SettingSummary(
                label=label,
                hparams=dict(hparams),
                folds=len(part),
                valid_rmse=float(part["valid_rmse"].mean()),
                test_rmse=float(part["rmse"].mean()),
                test_rmse_std=float(part["rmse"].std(ddof=0))
                if len(part) > 1
                else math.nan,  # as the report
                best_epoch=float(part["best_epoch"].mean()),
            )
        )
    return rows


def select_setting(summaries: Sequence[SettingSummary], folds_required: int) -> SettingSummary:
    """The grid point with the lowest mean validation RMSE among those that finished every fold.

    Points with missing folds are not candidates: their mean is over other folds, so it is not
    comparable.
    """
    complete = [s for s in summaries if s.folds == folds_required]
    if not complete:
        raise UserError(
            f"no setting has finished all {folds_required} folds yet; "
            "rerun the same command to continue"
        )
    return min(complete, key=lambda s: (s.valid_rmse, s.label))


def summary_table(
    summaries: Sequence[SettingSummary], selected: SettingSummary | None, unit: str = ""
) -> str:
    """Markdown table of the grid, the selected row marked."""
    unit_note = f" ({unit})" if unit else ""
    lines = [
        f"| setting | folds | valid RMSE{unit_note} | test RMSE{unit_note} mean (std) "
        "| mean best epoch | selected |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        if s.folds == 0:
            lines.append(f"| `{s.label}` | 0 | – | – | – | |")
            continue
        mark = "**yes**" if selected is not None and s.label == selected.label else ""
        lines.append(
            f"| `{s.label}` | {s.folds} | {s.valid_rmse:.3f} "
            f"| {s.test_rmse:.3f} ({s.test_rmse_std:.3f}) | {s.best_epoch:.0f} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def read_fold_metrics(path: Path) -> dict[str, Any]:
    """A fold's ``metrics.json``; ``InputFileError`` naming the file when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputFileError(
            path, f"not valid JSON ({err}); delete it or rerun that fold with --force"
        ) from err


def read_setting_metrics(
    root: str | Path, dataset: str, target: str, split: str, labels: Sequence[str]
) -> list[dict[str, Any]]:
    """Every finished fold of the given settings, as dicts with a ``setting`` key."""
    rows = []
    for label in labels:
        for path in sorted(
            (Path(root) / dataset / target / label / split).glob("r*-f*/metrics.json")
        ):
            metrics = read_fold_metrics(path)
            metrics["setting"] = label
            rows.append(metrics)
    return rows
