"""From a periodic repeat image to a STEM field of view: scan geometry, distortions, labels.

A STEM image samples the specimen at probe positions. We model exactly that: each output pixel
(row i, column j) is a point in the crystal frame

    c(i, j) = R(-θ) · A · (j, i) + offset,   A = [[p, v_x], [0, p + v_y]]

(p pixel size, θ in-plane rotation, v linear drift per scan line, which shears the frame), plus
per-line jitter along the fast axis. The periodic repeat image is read at c modulo the cell.
Labels map every column through the inverse of the affine part (jitter is noise, not geometry).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers
from scipy import ndimage

from data.simulate import RepeatImage


@dataclass
class ScanGeometry:
    shape: tuple[int, int] = (256, 256)  # (rows, columns)
    pixel_size: float = 0.1  # Å
    rotation: float = 0.0  # degrees, crystal x-axis relative to the fast scan axis
    offset: tuple[float, float] = (0.0, 0.0)  # crystal-frame position (Å) of pixel (0, 0)
    drift: tuple[float, float] = (0.0, 0.0)  # Å per scan line, (fast, slow)
    jitter: float = 0.0  # Å rms, per-line displacement along the fast axis

    def __post_init__(self):
        if not 0.01 <= self.pixel_size <= 1.0:
            raise ValueError(f"pixel size {self.pixel_size} Å is outside 0.01-1 Å")
        if min(self.shape) < 8:
            raise ValueError(f"field of view {self.shape} px is too small")

    @property
    def affine(self) -> np.ndarray:
        """2x2 map from pixel (j, i) to crystal-frame Å, without the offset."""
        p = self.pixel_size
        A = np.array([[p, self.drift[0]], [0.0, p + self.drift[1]]])
        t = np.deg2rad(self.rotation)
        r_inv = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
        return r_inv @ A

    def sample_points(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Crystal-frame coordinates (2, rows, cols) of every probe position."""
        ny, nx = self.shape
        jj, ii = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))
        if self.jitter > 0:
            if rng is None:
                raise ValueError("scan jitter needs a random generator")
            jj = jj + (rng.normal(0.0, self.jitter, size=ny) / self.pixel_size)[:, None]
        pts = np.einsum("ab,bij->aij", self.affine, np.stack([jj, ii]))
        return pts + np.asarray(self.offset, dtype=float)[:, None, None]


def blur_periodic(img: np.ndarray, sampling: tuple[float, float], sigma: float) -> np.ndarray:
    """Gaussian blur (σ in Å) of a periodic image in Fourier space: finite source size."""
    if sigma <= 0:
        return img
    ky = np.fft.fftfreq(img.shape[0], d=sampling[1])
    kx = np.fft.fftfreq(img.shape[1], d=sampling[0])
    g = np.exp(-2 * np.pi ** 2 * sigma ** 2 * (ky[:, None] ** 2 + kx[None, :] ** 2))
    return np.fft.ifft2(np.fft.fft2(img) * g).real


def render(repeat: RepeatImage, geometry: ScanGeometry, signal: str = "haadf", source_sigma: float = 0.0,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Noise-free image of the field: the repeat image read at every probe position."""
    img = blur_periodic(repeat.signals[signal], repeat.sampling, source_sigma)
    pts = geometry.sample_points(rng)
    dx, dy = repeat.sampling
    coords = np.stack([pts[1] / dy, pts[0] / dx])
    # cubic spline on a Nyquist-oversampled periodic image: sub-0.5 % interpolation error
    return ndimage.map_coordinates(img, coords, order=3, mode="grid-wrap", prefilter=True)


@dataclass
class ColumnLabels:
    x_px: np.ndarray
    y_px: np.ndarray
    element: list[str]  # dominant element of the column
    Z: np.ndarray
    composition: list[str]  # e.g. "O1Ti1" atoms per repeat along the beam
    occupancy: np.ndarray  # fraction of the column's atoms that are the dominant element
    z_weight: np.ndarray  # Σ Z^1.7 per Å: a HAADF brightness proxy
    pixel_size: float
    visible: np.ndarray  # bool: bright enough to be seen in the image (see ``column_labels``)

    @property
    def x_A(self):
        return self.x_px * self.pixel_size

    @property
    def y_A(self):
        return self.y_px * self.pixel_size

    def __len__(self):
        return len(self.x_px)


def column_labels(repeat: RepeatImage, geometry: ScanGeometry, margin: float = 0.0,
                  min_visible_weight: float = 0.0) -> ColumnLabels:
    """Every projected column inside the field (pixel and Å coordinates in the image frame).

    ``visible`` marks columns whose Z^1.7 weight is at least ``min_visible_weight`` of the
    brightest column of the crystal: in HAADF, oxygen next to strontium (7 %) is not in the image,
    so asking a network to mark it would ask for what the signal does not hold."""
    ny, nx = geometry.shape
    A = geometry.affine
    Ainv = np.linalg.inv(A)
    corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], dtype=float) @ A.T + geometry.offset
    Lx, Ly = repeat.cell
    n0, n1 = np.floor(corners.min(0) / [Lx, Ly]).astype(int) - 1
    m0, m1 = np.ceil(corners.max(0) / [Lx, Ly]).astype(int) + 1
    tx, ty = np.meshgrid(np.arange(n0, m0 + 1) * Lx, np.arange(n1, m1 + 1) * Ly)
    shifts = np.stack([tx.ravel(), ty.ravel()], axis=1)
    xs, ys, idx = [], [], []
    for k, c in enumerate(repeat.columns):
        pos = shifts + [c.x, c.y] - geometry.offset
        pix = pos @ Ainv.T
        keep = (pix[:, 0] >= -margin) & (pix[:, 0] <= nx - 1 + margin) & \
               (pix[:, 1] >= -margin) & (pix[:, 1] <= ny - 1 + margin)
        xs.append(pix[keep, 0])
        ys.append(pix[keep, 1])
        idx += [k] * int(keep.sum())
    cols = [repeat.columns[k] for k in idx]
    brightest = max(c.z_weight for c in repeat.columns)
    return ColumnLabels(
        x_px=np.concatenate(xs), y_px=np.concatenate(ys), element=[c.element for c in cols],
        Z=np.array([atomic_numbers[c.element] for c in cols], dtype=np.int64),
        composition=["".join(f"{e}{n}" for e, n in sorted(c.elements.items())) for c in cols],
        occupancy=np.array([c.elements[c.element] / sum(c.elements.values()) for c in cols]),
        z_weight=np.array([c.z_weight for c in cols]), pixel_size=geometry.pixel_size,
        visible=np.array([c.z_weight >= min_visible_weight * brightest for c in cols], dtype=bool))


def heatmap(labels: ColumnLabels, shape: tuple[int, int], sigma: float = 0.3) -> np.ndarray:
    """Atom-column target: a unit-height Gaussian (σ in Å) at every visible column, max-combined."""
    ny, nx = shape
    s = sigma / labels.pixel_size
    out = np.zeros(shape, dtype=np.float32)
    r = int(np.ceil(4 * s))
    for x, y in zip(labels.x_px[labels.visible], labels.y_px[labels.visible]):
        i0, i1 = max(int(y) - r, 0), min(int(y) + r + 2, ny)
        j0, j1 = max(int(x) - r, 0), min(int(x) + r + 2, nx)
        if i0 >= i1 or j0 >= j1:
            continue
        yy, xx = np.mgrid[i0:i1, j0:j1]
        g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s ** 2))
        np.maximum(out[i0:i1, j0:j1], g, out=out[i0:i1, j0:j1])
    return out


def refine_peak(img: np.ndarray, x: float, y: float, radius: int = 3) -> tuple[float, float]:
    """Sub-pixel position of the local maximum nearest (x, y) in pixels (parabolic fit)."""
    ny, nx = img.shape
    i0, j0 = int(round(y)), int(round(x))
    win = img[max(i0 - radius, 0):i0 + radius + 1, max(j0 - radius, 0):j0 + radius + 1]
    di, dj = np.unravel_index(np.argmax(win), win.shape)
    i, j = max(i0 - radius, 0) + di, max(j0 - radius, 0) + dj
    fy = fx = 0.0
    if 0 < i < ny - 1:
        a, b, c = img[i - 1, j], img[i, j], img[i + 1, j]
        den = a - 2 * b + c
        fy = 0.5 * (a - c) / den if den < 0 else 0.0
    if 0 < j < nx - 1:
        a, b, c = img[i, j - 1], img[i, j], img[i, j + 1]
        den = a - 2 * b + c
        fx = 0.5 * (a - c) / den if den < 0 else 0.0
    return j + fx, i + fy
