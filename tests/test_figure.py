"""model.figure: the overlay PNG is written (atomically), with or without its optional layers, quickly for large
inputs, and the FFT panel puts the lattice's reciprocal spots where the transform has its peaks."""
import time

import numpy as np
import pytest

from model.figure import fft_log_magnitude, reciprocal_vectors, save_overlay

LATTICE = np.array([[11.0, 2.0], [-3.0, 9.5]])  # oblique, so a flipped axis would put spots elsewhere


def _lattice_image(shape, lattice=LATTICE):
    """Bright Gaussian columns on the lattice, plus noise."""
    g = reciprocal_vectors(lattice)
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
    img = np.zeros(shape, np.float32)
    for gx, gy in g:
        img += np.cos(2 * np.pi * (gx * xx + gy * yy))
    return img + 0.2 * np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _columns(shape, lattice=LATTICE):
    ij = np.mgrid[-40:40, -40:40].reshape(2, -1).T
    xy = ij @ lattice + 5
    return xy[(xy[:, 0] < shape[1]) & (xy[:, 1] < shape[0]) & (xy >= 0).all(axis=1)]


def _check_png(path):
    from PIL import Image

    assert path.is_file()
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert 800 <= w <= 1200 and 800 <= h <= 1200
        a = np.asarray(im.convert("L"))
    assert a.std() > 5  # not blank
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_reciprocal_vectors():
    g = reciprocal_vectors(LATTICE)
    np.testing.assert_allclose(LATTICE @ g.T, np.eye(2), atol=1e-12)
    assert reciprocal_vectors(None) is None
    assert reciprocal_vectors([[1, 2], [2, 4]]) is None  # collinear
    assert reciprocal_vectors([[1, np.nan], [0, 1]]) is None
    assert reciprocal_vectors(np.eye(3)) is None


def test_fft_peaks_at_reciprocal_spots():
    img = _lattice_image((200, 260))
    mag, fx, fy = fft_log_magnitude(img)
    assert mag.shape == (200, 260) and len(fx) == 260 and len(fy) == 200
    m = mag.copy()
    peaks = []
    for _ in range(4):  # ±g1, ±g2
        i, j = np.unravel_index(np.argmax(m), m.shape)
        peaks.append((fx[j], fy[i]))
        m[max(i - 3, 0):i + 4, max(j - 3, 0):j + 4] = 0
    g = reciprocal_vectors(LATTICE)
    expected = np.concatenate([g, -g])
    for p in peaks:
        assert np.min(np.hypot(*(expected - p).T)) < 1.5 / 200  # within a frequency bin or so


def test_overlay_all_layers(tmp_path):
    img = _lattice_image((300, 256))
    cols = _columns(img.shape)
    out = tmp_path / "out" / "overlay.png"
    save_overlay(out, img, img * 0.5, 0.05, cols, cols + 0.7, LATTICE,
                 ["SrTiO3  Pm-3m (221)", "zone axis [001]", "confidence 0.93", "a very long line " * 10])
    _check_png(out)


def test_overlay_without_optional_layers(tmp_path):
    img = _lattice_image((128, 128))
    out = tmp_path / "overlay.png"
    save_overlay(out, img, None, None, None, None, None, [])
    _check_png(out)
    # empty point sets and a degenerate lattice are left out too, and a rerun overwrites
    save_overlay(out, img, img, float("nan"), np.zeros((0, 2)), None, np.zeros((2, 2)), ["x"])
    _check_png(out)


def test_overlay_large_image_is_quick(tmp_path):
    img = _lattice_image((4096, 4096))
    cols = _columns(img.shape)
    t = time.perf_counter()
    save_overlay(tmp_path / "overlay.png", img, img, 0.02, cols, cols, LATTICE, ["big"])
    elapsed = time.perf_counter() - t
    _check_png(tmp_path / "overlay.png")
    assert elapsed < 20, f"{elapsed:.1f} s for a 4096² image"


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "overlay.png"
    out.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError):
        save_overlay(out, _lattice_image((96, 96)), None, 0.1, None, None, None, ["x"])
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]
