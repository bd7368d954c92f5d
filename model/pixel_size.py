"""The pixel size an image without one implies, from how wide its atom columns look.

A column's image is the probe convolved with the column's potential, about 0.3 Å (Gaussian σ) for an
aberration-corrected probe, whatever the pixel. So the columns' width in pixels gives the pixel size to
within the spread of probes and specimens, ~20 % (``bench/column_width.py``). That cannot tell two
isostructural crystals 2 % apart, but it rules out a lattice at twice or half the scale: without it any
crystal whose projected lattice has the image's shape at *some* scale explains the image. Measured, that
does not pay on the pipeline benchmark (the look-alikes that win sit at the truth's scale), so the pipeline
reports the estimate and weighs candidates by it only when asked (``Options.column_sigma``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Gaussian σ (Å) of a column's mean image, and its spread (σ of ln), on 30 validation-split multislice images
# of the data engine (200 kV, 21 mrad, source 0-0.8 Å FWHM, pixel 0.06-0.15 Å, dose 1e3-1e5 e/Å²), read
# by ``column_sigma_px`` on the shipped denoiser's output: python bench/column_width.py
# (bench/results/column_width.json; median 0.319 Å, 0.198 in ln). A microscope with another probe has
# other numbers: set ``Options.column_sigma`` (and widen ``column_sigma_spread``), or give the pixel size.
COLUMN_SIGMA = 0.32
COLUMN_SIGMA_SPREAD = 0.20
MIN_COLUMNS = 8  # fewer, and the mean column is too noisy to fit: no estimate
WINDOW_SIGMAS = 3.0  # candidates whose implied pixel size lies further out are not retrieved


@dataclass
class PixelSizeEstimate:
    """Å per pixel with its log-normal spread, from the columns' width."""
    value: float
    sigma_ln: float
    column_sigma_px: float  # the fitted Gaussian σ of the mean column, px
    n_columns: int
    source: str = "column width"

    def prior(self, pixel_size: float) -> float:
        """How plausible ``pixel_size`` is (1 at the estimate)."""
        if not pixel_size or pixel_size <= 0:
            return 0.0
        return float(np.exp(-0.5 * (np.log(pixel_size / self.value) / self.sigma_ln) ** 2))

    def window(self, sigmas: float = WINDOW_SIGMAS) -> tuple[float, float]:
        f = float(np.exp(sigmas * self.sigma_ln))
        return self.value / f, self.value * f

    def to_dict(self) -> dict:
        return {"value": round(self.value, 5), "sigma_ln": self.sigma_ln, "column_sigma_px": round(self.column_sigma_px, 4),
                "n_columns": self.n_columns, "source": self.source}


def column_sigma_px(image: np.ndarray, xy_px: np.ndarray) -> float:
    """Gaussian σ (px) of the mean of ``image`` around the columns ``xy_px`` (x, y), sub-pixel aligned.

    The patch radius is half the median nearest-neighbour distance, so a neighbour's flank barely enters;
    the fit (amplitude, σ, background) runs inside that radius.
    """
    from scipy import ndimage
    from scipy.optimize import least_squares
    from scipy.spatial import cKDTree

    xy = np.asarray(xy_px, float).reshape(-1, 2)
    if len(xy) < MIN_COLUMNS:
        raise ValueError(f"{len(xy)} columns; the column width needs at least {MIN_COLUMNS}")
    nn = float(np.median(cKDTree(xy).query(xy, 2)[0][:, 1]))
    r = max(2, int(0.5 * nn))
    img = np.asarray(image, np.float64)
    img = (img - img.mean()) / (img.std() + 1e-12)
    ny, nx = img.shape
    keep = (xy[:, 0] > r + 1) & (xy[:, 0] < nx - r - 2) & (xy[:, 1] > r + 1) & (xy[:, 1] < ny - r - 2)
    if keep.sum() < MIN_COLUMNS:
        raise ValueError(f"{int(keep.sum())} columns away from the border; the column width needs {MIN_COLUMNS}")
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(float)
    mean = np.mean([ndimage.map_coordinates(img, [yy + y, xx + x], order=1) for x, y in xy[keep]], axis=0)
    r2 = xx ** 2 + yy ** 2
    inside = r2 <= r * r

    def residual(q):
        a, s, b = q
        return a * np.exp(-r2[inside] / (2 * s * s)) + b - mean[inside]

    fit = least_squares(residual, [float(np.ptp(mean)), r / 2, float(mean.min())],
                        bounds=([0.0, 0.3, -np.inf], [np.inf, 3.0 * r, np.inf]))
    if not fit.success or fit.x[0] <= 0:
        raise ValueError("the mean column has no peak to fit")
    return float(fit.x[1])


def estimate_pixel_size(image: np.ndarray, columns, column_sigma: float = COLUMN_SIGMA,
                        spread: float = COLUMN_SIGMA_SPREAD) -> PixelSizeEstimate | None:
    """The pixel size the brighter half of ``columns`` (``model.columns.Columns``) implies on ``image``
    (the denoised one); None when there are too few columns to tell."""
    if len(columns) < 2 * MIN_COLUMNS:
        return None
    bright = columns.intensity >= np.median(columns.intensity)
    try:
        s = column_sigma_px(image, np.stack([columns.x_px[bright], columns.y_px[bright]], 1))
    except ValueError:
        return None
    return PixelSizeEstimate(column_sigma / s, spread, s, int(bright.sum()))
