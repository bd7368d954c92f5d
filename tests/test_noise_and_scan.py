"""Noise statistics, seamless tiling, scan distortions and labels."""
from dataclasses import replace

import numpy as np
import pytest

from data.noise import ConditionRanges, Conditions, NoiseModel, draw_conditions
from data.prototypes import build_bulk
from data.sample import make_sample
from data.scan import ScanGeometry, column_labels, heatmap, refine_peak, render
from data.simulate import Microscope, SimulationConfig, Simulator
from data.zone_axes import describe, orthogonal_cell, project_columns

CONV = SimulationConfig(method="convolution", thickness=20.0)


@pytest.fixture(scope="module")
def gaas():
    return build_bulk("zincblende", {"A": "Ga", "X": "As"}, 5.653)


@pytest.fixture(scope="module")
def repeat(gaas):
    return Simulator(Microscope(), CONV).simulate(gaas, (1, 1, 0))


def test_poisson_mean_and_variance_at_known_dose():
    rng = np.random.default_rng(1)
    fraction = np.full((400, 400), 0.05)
    noise = NoiseModel(dose=1e4, gain=2.0, offset=10.0, read_noise=0.0)
    lam = 1e4 * 0.1 ** 2 * 0.05  # 5 electrons per pixel
    img = noise.sample(fraction, np.zeros_like(fraction), 0.1, rng)
    assert img.mean() == pytest.approx(2 * lam + 10, rel=0.01)
    assert img.var() == pytest.approx(4 * lam, rel=0.03)  # Poisson: var(N) = mean(N), scaled by gain²
    counts = (img - 10) / 2
    assert np.allclose(counts, np.round(counts))  # whole electrons
    noisy_read = NoiseModel(dose=1e4, read_noise=3.0).sample(fraction, np.zeros_like(fraction), 0.1, rng)
    assert noisy_read.var() == pytest.approx(lam + 9, rel=0.04)


def test_clean_image_is_the_expectation_of_the_noisy_one(repeat):
    g = ScanGeometry(shape=(64, 64), pixel_size=0.1)
    cond = Conditions(g, NoiseModel(dose=1e5, gain=1.5, offset=5.0, read_noise=1.0, background=0.2))
    stack = [make_sample(repeat, cond, np.random.default_rng(k)) for k in range(200)]
    residual = np.mean([s.noisy - s.clean for s in stack], axis=0)  # each draw has its own background
    assert np.abs(residual).mean() / stack[0].clean.mean() < 0.02
    assert np.std([s.clean.mean() for s in stack]) > 0  # the background really varies between draws


def test_tiling_is_seamless(gaas):
    """The field rendered from one repeat equals a direct simulation of a 2x1 supercell."""
    sim = Simulator(Microscope(), CONV)
    _, atoms, _ = describe(gaas, (1, 1, 0))
    one = sim.simulate_atoms(atoms, project_columns(atoms))
    two_atoms = atoms * (2, 1, 1)
    two = sim.simulate_atoms(two_atoms, project_columns(two_atoms))
    g = ScanGeometry(shape=(96, 96), pixel_size=0.07, rotation=33.0, offset=(0.4, 1.3))
    a, b = render(one, g), render(two, g)
    assert np.abs(a - b).max() / a.max() < 0.01
    # and no step where the repeat boundary crosses the field: the field shifted by a full cell is identical
    shifted = render(one, replace(g, offset=(0.4 + one.cell[0], 1.3 + one.cell[1])))
    np.testing.assert_allclose(shifted, a, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rotation,drift", [(0.0, (0.0, 0.0)), (27.0, (0.0, 0.0)), (121.0, (0.003, -0.002))])
def test_labels_follow_rotation_offset_and_drift(repeat, rotation, drift):
    g = ScanGeometry(shape=(160, 160), pixel_size=0.08, rotation=rotation, offset=(1.1, 0.7), drift=drift)
    img = render(repeat, g)
    labels = column_labels(repeat, g)
    inside = (labels.x_px > 4) & (labels.x_px < 155) & (labels.y_px > 4) & (labels.y_px < 155)
    assert inside.sum() > 20
    errs = [np.hypot(*(np.array(refine_peak(img, x, y, 3)) - (x, y))) * g.pixel_size
            for x, y in zip(labels.x_px[inside], labels.y_px[inside])]
    assert max(errs) <= 0.1
    assert set(labels.element) == {"Ga", "As"} and set(labels.Z) == {31, 33}


def test_heatmap_peaks_at_labels(repeat):
    g = ScanGeometry(shape=(80, 80), pixel_size=0.1, rotation=10.0)
    labels = column_labels(repeat, g)
    hm = heatmap(labels, g.shape, sigma=0.3)
    assert hm.max() == pytest.approx(1.0, abs=0.05) and hm.min() >= 0
    for x, y in zip(labels.x_px, labels.y_px):
        if 2 < x < 77 and 2 < y < 77:
            assert hm[int(round(y)), int(round(x))] > 0.5


def test_jitter_displaces_lines_but_not_labels(repeat):
    rng = np.random.default_rng(3)
    g = ScanGeometry(shape=(64, 64), pixel_size=0.1, jitter=0.3)
    cond = Conditions(g, NoiseModel(dose=1e9))
    s = make_sample(repeat, cond, rng)
    assert np.abs(s.noisy / s.noisy.mean() - s.clean / s.clean.mean()).mean() > 0.02
    steady = column_labels(repeat, replace(g, jitter=0.0))
    np.testing.assert_array_equal(s.columns.x_px, steady.x_px)


def test_conditions_are_reproducible_and_in_range():
    r = ConditionRanges()
    a = draw_conditions(np.random.default_rng(7), r, (64, 64), (4.0, 5.0))
    b = draw_conditions(np.random.default_rng(7), r, (64, 64), (4.0, 5.0))
    assert a == b
    for k in range(50):
        c = draw_conditions(np.random.default_rng(k), r, (64, 64), (4.0, 5.0))
        assert 1e2 <= c.noise.dose <= 1e6 and 0.05 <= c.geometry.pixel_size <= 0.2


def test_bad_noise_and_geometry_rejected():
    with pytest.raises(ValueError, match="dose"):
        NoiseModel(dose=0)
    with pytest.raises(ValueError, match="pixel size"):
        ScanGeometry(pixel_size=5.0)
    with pytest.raises(ValueError, match="dose"):
        ConditionRanges(dose=(1e3, 1e2))


def test_orthogonal_cell_of_hexagonal_plan_view():
    mos2 = build_bulk("mos2_2h", {"A": "Mo", "X": "S"}, 3.16, 12.29)
    _, atoms, cols = describe(mos2, (0, 0, 1))
    assert atoms.cell[0, 1] == pytest.approx(0) and atoms.cell[1, 0] == pytest.approx(0)
    assert atoms.cell[1, 1] / atoms.cell[0, 0] == pytest.approx(np.sqrt(3))
    assert len(orthogonal_cell(atoms)) == len(atoms)


def test_light_columns_next_to_heavy_ones_are_not_heatmap_targets():
    srtio3 = build_bulk("perovskite", {"A": "Sr", "B": "Ti", "X": "O"}, 3.905)
    rep = Simulator(Microscope(), CONV).simulate(srtio3, (1, 0, 0))
    g = ScanGeometry(shape=(64, 64), pixel_size=0.1)
    labels = column_labels(rep, g, min_visible_weight=0.12)
    seen = {comp for comp, v in zip(labels.composition, labels.visible) if v}
    assert seen == {"Sr1", "O1Ti1"}  # pure-oxygen columns (7 % of Sr in Z^1.7) are left out
    hm = heatmap(labels, g.shape)
    o = [(x, y) for x, y, c in zip(labels.x_px, labels.y_px, labels.composition) if c == "O1"]
    assert all(hm[int(round(y)), int(round(x))] < 0.1 for x, y in o if 2 < x < 61 and 2 < y < 61)
