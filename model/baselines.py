"""Retrieval baselines the learned encoders are measured against (same inputs, same templates).

* ``PairDistanceBaseline``: the seed system's descriptor: Otsu threshold → connected-component
  centroids → histogram of centroid pair distances (Å) → nearest template.
* ``LatticeMetricBaseline``: the 2-D lattice seen in the FFT: ratio and angle of the two
  shortest reciprocal vectors (plus their absolute length, as the pixel size is known).

Both index clean template images rendered by the project's own simulation path at the
canonical pixel size, so they compare like with like.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu

from model.retrieval import CANONICAL_PIXEL, Candidate, TemplateIndex, canonical_view, top_k

HIST_RANGE = 8.0  # Å
HIST_BINS = 40


def pair_distance_descriptor(image: np.ndarray, pixel_size: float) -> np.ndarray:
    img = ndimage.gaussian_filter(np.asarray(image, np.float64), 0.3 / pixel_size)
    labels, n = ndimage.label(img > threshold_otsu(img))
    if n < 2:
        return np.zeros(HIST_BINS)
    xy = np.array(ndimage.center_of_mass(img, labels, range(1, n + 1))) * pixel_size
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))[np.triu_indices(n, 1)]
    h, _ = np.histogram(d, bins=HIST_BINS, range=(0.0, HIST_RANGE))
    return h / max(h.sum(), 1)


def lattice_metric(image: np.ndarray, pixel_size: float, n_peaks: int = 12) -> np.ndarray:
    """(|g1| in 1/Å, |g2|/|g1|, angle in degrees) of the two shortest strong reciprocal vectors."""
    img = np.asarray(image, np.float64)
    img = (img - img.mean()) * np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    F = np.abs(np.fft.fftshift(np.fft.fft2(img)))
    cy, cx = np.array(F.shape) // 2
    F[cy - 2:cy + 3, cx - 2:cx + 3] = 0  # DC and the window's own leakage
    peaks = peak_local_max(np.log1p(F), min_distance=2, num_peaks=n_peaks, exclude_border=False)
    if len(peaks) < 2:
        return np.array([0.0, 1.0, 90.0])
    g = (peaks - [cy, cx]) / (np.array(F.shape) * pixel_size)  # (gy, gx) in 1/Å
    g = g[np.argsort(np.linalg.norm(g, axis=1))]
    g1 = g[0]
    for v in g[1:]:
        cos = abs(v @ g1) / (np.linalg.norm(v) * np.linalg.norm(g1))
        if cos < 0.95:
            ang = np.degrees(np.arccos(cos))
            return np.array([np.linalg.norm(g1), np.linalg.norm(v) / np.linalg.norm(g1), ang])
    return np.array([np.linalg.norm(g1), 1.0, 90.0])


def template_images(index: TemplateIndex, simulator, size: int = 128, thickness: float = 80.0) -> list[np.ndarray]:
    """Clean canonical-pixel renders of every indexed (template, zone axis)."""
    from data.library import get_entry
    from data.scan import ScanGeometry, render

    out = []
    for r in index.records:
        repeat = simulator.simulate(get_entry(r["template_id"]).structure, r["zone_axis"], thickness)
        out.append(render(repeat, ScanGeometry(shape=(size, size), pixel_size=CANONICAL_PIXEL)))
    return out


class _DescriptorBaseline:
    name = ""

    def __init__(self, index: TemplateIndex, templates: list[np.ndarray]):
        self.index = index
        self.table = np.stack([self.describe(t, CANONICAL_PIXEL) for t in templates])

    def describe(self, image, pixel_size) -> np.ndarray:
        raise NotImplementedError

    def distance(self, q: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def query(self, image, pixel_size, k=5, elements=None, exclude=None) -> list[Candidate]:
        view = canonical_view(image, pixel_size, 128)[0]
        d = np.where(self.index.allowed(elements, exclude), self.distance(self.describe(view, CANONICAL_PIXEL)),
                     np.inf)
        return [self.index._candidate(rank, i, -float(d[i])) for rank, i in enumerate(top_k(-d, k), 1)]


class PairDistanceBaseline(_DescriptorBaseline):
    name = "seed_pair_distance"

    def describe(self, image, pixel_size):
        return pair_distance_descriptor(image, pixel_size)

    def distance(self, q):
        return np.abs(self.table - q).sum(1)


class LatticeMetricBaseline(_DescriptorBaseline):
    name = "fft_lattice_metric"

    def describe(self, image, pixel_size):
        return lattice_metric(image, pixel_size)

    def distance(self, q):
        t = self.table
        return (np.abs(np.log(np.maximum(t[:, 0], 1e-6) / max(q[0], 1e-6))) + np.abs(t[:, 1] - q[1])
                + np.abs(t[:, 2] - q[2]) / 30.0)
