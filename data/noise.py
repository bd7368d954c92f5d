"""Noise and optics model of a STEM detector, and the random conditions a sample is drawn under.

One implementation serves training data, tests and benchmarks. A noise-free image is the
fraction of the beam that reaches the detector at each probe position; the detector then sees

    N ~ Poisson(dose · p² · (fraction + background)),   signal = gain · N + offset + read noise

so the *clean* target we store is the expectation of that signal (``expected_signal``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from data.scan import ScanGeometry

FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))


@dataclass
class NoiseModel:
    dose: float = 1e4  # electrons per Å²
    source_size: float = 0.0  # Å FWHM of the effective source (incoherent probe blur)
    gain: float = 1.0  # detector counts per electron
    offset: float = 0.0  # detector dark level, counts
    read_noise: float = 0.0  # counts rms, Gaussian
    background: float = 0.0  # slowly varying additive background, in units of the mean fraction

    def __post_init__(self):
        if not self.dose > 0:
            raise ValueError(f"dose must be positive, got {self.dose}")
        if self.gain <= 0 or self.read_noise < 0 or self.source_size < 0 or self.background < 0:
            raise ValueError("gain must be > 0; read_noise, source_size and background >= 0")

    @property
    def source_sigma(self) -> float:
        return self.source_size / FWHM_PER_SIGMA

    def electrons_per_pixel(self, pixel_size: float) -> float:
        return self.dose * pixel_size ** 2

    def background_field(self, fraction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A smooth random background (thickness / contamination variation across the field)."""
        if self.background <= 0:
            return np.zeros_like(fraction)
        coarse = rng.uniform(0.5, 1.5, size=(4, 4))
        zoom = (fraction.shape[0] / 4, fraction.shape[1] / 4)
        field_ = ndimage.zoom(coarse, zoom, order=3, mode="nearest")[: fraction.shape[0], : fraction.shape[1]]
        return self.background * float(fraction.mean()) * field_

    def expected_signal(self, fraction: np.ndarray, background: np.ndarray, pixel_size: float) -> np.ndarray:
        return self.gain * self.electrons_per_pixel(pixel_size) * (fraction + background) + self.offset

    def sample(self, fraction: np.ndarray, background: np.ndarray, pixel_size: float,
               rng: np.random.Generator) -> np.ndarray:
        lam = self.electrons_per_pixel(pixel_size) * np.clip(fraction + background, 0, None)
        counts = rng.poisson(lam).astype(np.float64)
        out = self.gain * counts + self.offset
        if self.read_noise > 0:
            out += rng.normal(0.0, self.read_noise, size=out.shape)
        return out


@dataclass
class ConditionRanges:
    """Ranges the data engine draws each sample's conditions from (log-uniform for dose)."""
    dose: tuple[float, float] = (1e2, 1e6)
    pixel_size: tuple[float, float] = (0.05, 0.2)
    rotation: tuple[float, float] = (0.0, 360.0)
    source_size: tuple[float, float] = (0.0, 0.8)  # Å FWHM
    jitter: tuple[float, float] = (0.0, 0.08)  # Å rms
    drift: tuple[float, float] = (0.0, 0.004)  # Å per line, magnitude
    gain: tuple[float, float] = (0.5, 4.0)
    offset: tuple[float, float] = (0.0, 100.0)
    read_noise: tuple[float, float] = (0.0, 3.0)
    background: tuple[float, float] = (0.0, 0.5)

    def __post_init__(self):
        for name, (lo, hi) in asdict(self).items():
            if lo > hi:
                raise ValueError(f"condition range {name}: low {lo} > high {hi}")
        if self.dose[0] <= 0:
            raise ValueError("dose range must be positive")


@dataclass
class Conditions:
    geometry: ScanGeometry
    noise: NoiseModel
    extra: dict = field(default_factory=dict)


def draw_conditions(rng: np.random.Generator, ranges: ConditionRanges, shape: tuple[int, int],
                    cell: tuple[float, float]) -> Conditions:
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    drift_mag, drift_dir = u(ranges.drift), rng.uniform(0, 2 * np.pi)
    geometry = ScanGeometry(
        shape=shape, pixel_size=u(ranges.pixel_size), rotation=u(ranges.rotation),
        offset=(float(rng.uniform(0, cell[0])), float(rng.uniform(0, cell[1]))),
        drift=(drift_mag * np.cos(drift_dir), drift_mag * np.sin(drift_dir)), jitter=u(ranges.jitter))
    noise = NoiseModel(
        dose=float(np.exp(rng.uniform(*np.log(ranges.dose)))), source_size=u(ranges.source_size),
        gain=u(ranges.gain), offset=u(ranges.offset), read_noise=u(ranges.read_noise), background=u(ranges.background))
    return Conditions(geometry, noise)
