"""The HTML report in a real headless browser: it opens offline with no console error, its 3D view
draws the atoms of real optimized complexes, and its tables hold the results, the ablation and the
samples' interaction energies."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("dgl")

from curated_tables import freesolv_rows, write_pair_table  # noqa: E402
from headless_browser import file_url, open_page  # noqa: E402

from pairfactory.ml.evaluate import ProtocolOptions, run_protocol  # noqa: E402
from pairfactory.ml.report import write_report  # noqa: E402
from pairfactory.ml.train import TrainSettings  # noqa: E402
from real_shards import optimize_water_pairs  # noqa: E402


def _real_shards(root: Path) -> Path:
    """Two pairs (ethanol, acetic acid in water) x 2 samples, optimized with GFN2-xTB."""
    shards_dir = root / "shards" / "freesolv" / "xtb-test0000"
    optimize_water_pairs(["CCO", "CC(=O)O"], shards_dir, root / "parts")
    return shards_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("html_report")
    table = tmp / "pairs.parquet"
    write_pair_table(freesolv_rows(30, dataset="freesolv_cgib"), table)
    options = ProtocolOptions(
        settings=TrainSettings(max_epochs=2, batch_size=8, device="cpu"),
        n_folds=3,
        graph_cache=tmp / "gc.pt",
        hparams={"hidden_dim": 16},
    )
    for model in ("probpair_2d", "probpair"):
        run_protocol(
            table,
            model,
            "random",
            tmp / "evaluate",
            options,
            repeats=1,
            folds=[0, 1],
            progress=False,
        )
    written = write_report(tmp / "evaluate", tmp / "report", shards_dirs=[_real_shards(tmp)])
    return written["html"]


def test_the_page_is_self_contained(report: Path) -> None:
    text = report.read_text()
    # no external script, stylesheet or image in our markup (the inlined viewer bundle holds
    # links to its documentation in strings; the browser test checks that nothing is fetched)
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.DOTALL)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup)
    assert text.count("data:image/png;base64,") >= 6  # parity, learning, calibration x 2 models
    assert "Calibration of the probabilistic models" in text
    assert (
        "Ablation: our model against its 2D twin" in text
        # trained here without shards: labelled as such, never averaged with sample-trained folds
        and "<td>probpair@hidden_dim=16,samples=false</td>" in text
    )
    assert "interaction_energy_kcal_mol" in text and "CC(=O)O" in text


def test_the_page_loads_without_errors_and_draws_atoms(report: Path, chromium_program: str) -> None:
    import matplotlib.image as mpimg

    page = open_page(chromium_program, file_url(report))
    try:
        assert page.wait_until("window.pairfactoryViewsLoaded === 1", timeout=90)
        page._read(2.0)  # let the WebGL canvas draw
        png = page.screenshot("#structure-0")
        assert page.errors == [], page.errors
        fetched = [u for u in page.requested_urls() if not u.startswith(("file:", "data:"))]
        assert fetched == [], f"the page fetched {fetched}: it must open offline"
    finally:
        page.close()
    (report.parent / "structure-0.png").write_bytes(png)  # kept beside the report for a look
    pixels = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    pixels = pixels[60:]  # below the viewer's toolbar (grey icons, a red legend dot)
    ink = (pixels < 0.85).any(axis=-1)  # anything darker than the white background
    # atoms: carbon grey and oxygen red spheres, shaded (many distinct colours)
    red = (pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    mean = pixels.mean(axis=-1)
    grey = (np.ptp(pixels, axis=-1) < 0.08) & (mean > 0.2) & (mean < 0.6)
    assert ink.mean() > 0.02, f"the 3D view looks blank ({ink.mean():.3%} ink)"
    assert red.sum() > 600 and grey.sum() > 1500, (red.sum(), grey.sum())
    colours = np.unique((pixels[ink] * 32).astype(int), axis=0)
    assert len(colours) > 50  # shading, not a flat icon
