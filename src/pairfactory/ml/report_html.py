"""The report as one self-contained HTML page (``report.html``) that opens offline.

Everything is inside the file: the tables, the plots (PNG as data URIs), and the interactive 3D
views of noisy complexes, drawn by chemiscope's viewer (its JavaScript bundle comes from the
installed ``chemiscope`` Python package and is inlined: no CDN, no network). Tested in headless
Chromium (``tests/models/test_report_html.py``): no console errors, atoms drawn on the canvas.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pandas as pd

from pairfactory import __version__
from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write_text
from pairfactory.ml.complex_views import ComplexViews
from pairfactory.ml.report import QUALITY_NOTE, quality_rows, unmatched_note

HTML_FILE = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.8rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.4rem; vertical-align: top; }
figure img { max-width: 540px; border: 1px solid #eee; }
figcaption { font-size: 0.75rem; color: #555; max-width: 540px; }
.note { color: #555; font-size: 0.85rem; }
.views { display: flex; gap: 1rem; align-items: flex-start; flex-wrap: wrap; }
.viewer { width: 560px; height: 460px; position: relative; border: 1px solid #ccc; }
.viewer-info { width: 560px; }
"""


def _viewer_script() -> str:
    try:
        static = resources.files("chemiscope") / "sphinx" / "static" / "chemiscope.min.js"
        return static.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise UserError(
            "the HTML report's 3D viewer comes from the chemiscope package, which is not "
            "installed: run `make venv` (or pip install chemiscope==1.1.0), or pass --no-html"
        ) from err


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(frame: pd.DataFrame, floats: str = "{:.3f}") -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "–" if value != value else floats.format(value)
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _json_for_script(value: object) -> str:
    # "</" would end the <script> element early
    return json.dumps(value).replace("</", "<\\/")


# what a row of the results is: the same first columns in every table of a model's numbers
ROW_COLUMNS = {
    "dataset": "dataset",
    "target": "target",
    "unit": "unit",
    "split": "split",
    "model": "model",
    "n_folds": "folds",
}


RESULT_COLUMNS = {
    **ROW_COLUMNS,
    "n_repeats": "repeats",
    "folds_per_repeat": "folds per repeat",
    "rmse_mean": "test RMSE mean",
    "rmse_std": "std",
    "mae_mean": "MAE",
    "r2_mean": "R²",
    "published_rmse": "published RMSE",
    "project_target_rmse": "project target",
}


QUALITY_COLUMNS = {
    **ROW_COLUMNS,
    "nll_mean": "test NLL",
    "miscalibration_area_mean": "miscalibration area",
    "coverage_68_mean": "68 % coverage",
    "coverage_95_mean": "95 % coverage",
    "spearman_abs_error_std_mean": "ρ(|error|, σ)",
    "rmse_test_covered_mean": "RMSE with samples",
    "n_test_covered_mean": "pairs with samples",
    "rmse_test_uncovered_mean": "RMSE without",
}


ABLATION_COLUMNS = {
    "dataset": "dataset",
    "target": "target",
    "unit": "unit",
    "split": "split",
    "variant": "variant",
    "reference": "2D twin",
    "training_differs": "trained differently (variant / twin)",
    "folds": "folds",
    "rmse_variant": "RMSE variant",
    "rmse_reference": "RMSE twin",
    "difference": "Δ (variant − twin)",
    "ci95_half_width": "95 % CI ±",
    "p": "p",
    "folds_won": "folds won",
}


def write_html_report(
    out_dir: str | Path,
    summary: pd.DataFrame,
    plots: Sequence[tuple[str, Path]],
    ablation: pd.DataFrame,
    views: Sequence[ComplexViews],
    n_folds: int,
    results_root: str | Path,
) -> Path:
    """Write ``report.html`` into ``out_dir``; ``plots`` are (section, PNG path) pairs."""
    out = Path(out_dir)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>pairfactory report</title>",
        f"<style>{_STYLE}</style>",
    ]
    if views:
        parts.append(f"<script>{_viewer_script()}</script>")
    parts += [
        "</head><body>",
        "<h1>pairfactory report</h1>",
        f"<p class='note'>{n_folds} finished folds under <code>{html.escape(str(results_root))}"
        f"</code>; written {datetime.now(UTC).isoformat(timespec='seconds')} by pairfactory "
        f"{html.escape(__version__)}. Test RMSE at the epoch with the best validation RMSE of "
        "each fold; mean (std) over folds × repeats. Published numbers: CGIB paper (random "
        "5-fold CV × 5 repeats), claims until this harness reproduces them.</p>",
        "<h2>Results</h2>",
        _table(summary[list(RESULT_COLUMNS)].rename(columns=RESULT_COLUMNS)),
    ]
    quality = quality_rows(summary)
    if not quality.empty:
        parts += [
            "<h2>Uncertainty and QM-sample coverage</h2>",
            f"<p class='note'>{html.escape(QUALITY_NOTE)}</p>",
            _table(quality[list(QUALITY_COLUMNS)].rename(columns=QUALITY_COLUMNS)),
        ]
    parts += [
        "<h2>Ablation: our model against its 2D twin</h2>",
    ]
    if ablation.empty:
        parts.append(
            "<p class='note'>No ablation: no variant of our model has a 2D twin trained alike "
            "on the same folds. Run probpair_2d beside probpair, or beside a variant with a part "
            "switched off.</p>"
        )
    else:
        parts.append(
            "<p class='note'>Same folds of every repeat, paired: Δ = variant − twin (negative: "
            "the variant is better), 95 % interval and p from the corrected resampled t-test. "
            "Batch size and learning rate may differ (each model at its own choice).</p>"
        )
        parts.append(
            _table(ablation.rename(columns=ABLATION_COLUMNS)[list(ABLATION_COLUMNS.values())])
        )
    unmatched = unmatched_note(ablation)
    if unmatched:
        parts.append(f"<p class='note'>{html.escape(unmatched)}</p>")
    for section in dict.fromkeys(name for name, _ in plots):
        parts.append(f"<h2>{html.escape(section)}</h2>")
        parts += [_image(path, path.stem) for name, path in plots if name == section]
    if views:
        parts.append("<h2>Noisy complexes (interactive 3D)</h2>")
        parts.append(
            "<p class='note'>A few pairs of each dataset with QM samples: every structure is one "
            "cheap optimization from a random start. Drag to rotate, scroll to zoom, the slider "
            "steps through the samples; the table lists their interaction energies.</p>"
        )
    for i, view in enumerate(views):
        parts += [
            f"<h3 id='views-{i}'>{html.escape(view.dataset)} ({html.escape(view.engine_tag)})</h3>",
            "<div class='views'>",
            f"<div><div id='meta-{i}'></div><div id='structure-{i}' class='viewer'></div></div>",
            f"<div class='viewer-info'><div id='info-{i}'></div>{_table(view.table, '{:.2f}')}"
            "</div></div>",
        ]
    if views:
        datasets = _json_for_script([view.chemiscope for view in views])
        parts.append(
            "<script>\n"
            f"const PAIRFACTORY_VIEWS = {datasets};\n"
            "window.pairfactoryViewsLoaded = 0;\n"
            "PAIRFACTORY_VIEWS.forEach((dataset, i) => {\n"
            "  const config = {\n"
            "    structure: `structure-${i}`, info: `info-${i}`, meta: `meta-${i}`,\n"
            "  };\n"
            "  Chemiscope.StructureVisualizer.load(config, dataset)\n"
            "    .then(() => { window.pairfactoryViewsLoaded += 1; })\n"
            "    .catch((error) => { console.error('3D view', i, 'failed:', error); });\n"
            "});\n"
            "</script>"
        )
    parts.append("</body></html>")
    path = out / HTML_FILE
    atomic_write_text(path, "\n".join(parts))
    return path
