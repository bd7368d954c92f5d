"""An image without a pixel size: the pixel size its columns' width implies (model.pixel_size), and how
retrieval and the loop use it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from data.library import get_entry
from data.noise import ConditionRanges
from data.sample import draw_sample
from data.simulate import Simulator
from model.denoiser import Denoiser
from model.pixel_size import COLUMN_SIGMA, PixelSizeEstimate, column_sigma_px, estimate_pixel_size


@pytest.fixture(scope="module")
def sim():
    return Simulator(cache_dir=".cache/repeats")


@pytest.fixture(scope="module")
def denoiser():
    return Denoiser.from_checkpoint()


def test_the_mean_column_gives_back_the_width_of_gaussian_columns():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:160, :160].astype(float)
    centres = np.array([(12.0 * i + 7.3, 12.0 * j + 5.6) for i in range(13) for j in range(13)])
    img = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5 ** 2)) for x, y in centres)
    img = img + 0.3 + rng.normal(0, 0.02, img.shape)
    assert column_sigma_px(img, centres) == pytest.approx(2.5, rel=0.03)
    with pytest.raises(ValueError, match="at least"):
        column_sigma_px(img, centres[:3])


def test_the_prior_is_log_normal_about_the_estimate():
    est = PixelSizeEstimate(0.1, 0.2, 3.0, 50)
    assert est.prior(0.1) == 1.0
    assert est.prior(0.1 * np.exp(0.2)) == pytest.approx(np.exp(-0.5)) == pytest.approx(est.prior(0.1 / np.exp(0.2)))
    lo, hi = est.window(3.0)
    assert lo * hi == pytest.approx(0.01) and hi / lo == pytest.approx(np.exp(1.2))


@pytest.mark.parametrize("entry_id,uvw", [("SrTiO3-perovskite", (0, 0, 1)), ("Si-diamond", (1, 1, 0))])
def test_the_columns_width_estimates_the_pixel_size_of_a_noisy_image(sim, denoiser, entry_id, uvw):
    """Two pixel sizes 1.8× apart, read as ``Pipeline.run`` reads an image without one: each estimate within
    25 % of the truth, and their ratio within 10 % of 1.8."""
    found = []
    for px in (0.07, 0.126):
        ranges = replace(ConditionRanges(), pixel_size=(px, px), source_size=(0.3, 0.3))
        s = draw_sample(sim, get_entry(entry_id).structure, uvw, np.random.default_rng(3), ranges, (256, 256),
                        thicknesses=(80.0,), dose=2e4)
        res = denoiser(s.noisy, denoiser.working_pixel_size(0.1))  # as Pipeline.run reads it without a pixel size
        est = estimate_pixel_size(res.denoised, res.columns)
        assert est is not None and est.value == pytest.approx(px, rel=0.25)
        assert est.column_sigma_px * px == pytest.approx(COLUMN_SIGMA, rel=0.25)
        found.append(est.value)
    assert found[1] / found[0] == pytest.approx(1.8, rel=0.1)


def test_too_few_columns_give_no_estimate():
    from model.columns import Columns

    xy = np.random.default_rng(0).uniform(10, 100, (10, 2))
    cols = Columns(xy[:, 0], xy[:, 1], np.ones(10), np.ones(10), 0.1)
    assert estimate_pixel_size(np.zeros((128, 128)), cols) is None


@pytest.fixture(scope="module")
def si_runs():
    """The bundled Si [110] example (0.08 Å/px) run as if its file had no calibration: with the columns'
    width weighing the candidates (``--column-sigma``), and by default, the lattice's shape alone."""
    from data.io import load_image
    from model.pipeline import Options, Pipeline

    image = replace(load_image("examples/si_110.tif"), pixel_size=None, pixel_size_source="unknown")
    pipe = Pipeline.load(Options(potential="none", column_sigma=COLUMN_SIGMA))
    width = pipe.run(image)
    pipe.options = replace(pipe.options, column_sigma=None)
    return width, pipe.run(image)


def test_without_a_pixel_size_the_columns_width_keeps_si_from_being_taken_for_diamond(si_runs):
    from model.outputs import summary_lines

    width, shape = (r.report for r in si_runs)
    assert width["template"]["id"] == "Si-diamond" and width["zone_axis"]["uvw"] == [1, 1, 0]
    assert width["input"]["pixel_size_source"] == "estimate"
    assert width["input"]["pixel_size_used"] == pytest.approx(0.08, rel=0.01)
    est = width["pixel_size_estimate"]
    assert est["source"] == "column width" and est["weighs_candidates"] and est["value"] == pytest.approx(0.08, rel=0.25)
    prior = PixelSizeEstimate(est["value"], est["sigma_ln"], 0.0, 0).prior
    scored = [c for c in width["candidates"] if "score" in c]
    assert len(scored) > 10
    for c in scored:  # the prior of the pixel size each fit implies is a factor of the score they are ranked by
        assert c["pixel_size_prior"] == pytest.approx(prior(c["pixel_size"]), abs=2e-4)  # rounded in the report
        assert c["score"] == pytest.approx(c["verification_score"] * c["lattice_prior"] * c["pixel_size_prior"], abs=2e-5)
    kept = max(scored, key=lambda c: c["score"])
    assert kept["template_id"] == "Si-diamond" and kept["pixel_size_prior"] > 0.9
    assert any("the columns' width alone" in line for line in summary_lines(si_runs[0]))
    # the lattice's shape alone (the default): diamond C's [110] at two thirds of the scale explains the
    # columns as well; the width's estimate is reported, and weighs nothing
    assert shape["template"]["id"] == "C-diamond"
    assert shape["input"]["pixel_size_used"] == pytest.approx(0.08 * 3.567 / 5.431, rel=0.02)
    assert shape["pixel_size_estimate"] == est | {"weighs_candidates": False}
    assert all(c["pixel_size_prior"] == 1.0 for c in shape["candidates"] if "score" in c)
