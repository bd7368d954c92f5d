"""One training/test sample: a repeat image seen through a scan geometry and a detector."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from data.noise import Conditions
from data.scan import ColumnLabels, column_labels, heatmap, render
from data.simulate import RepeatImage


@dataclass
class Sample:
    noisy: np.ndarray  # detector signal, float32 (rows, cols)
    clean: np.ndarray  # its expectation without noise or scan jitter
    heatmap: np.ndarray  # atom-column target in [0, 1]
    columns: ColumnLabels
    conditions: Conditions
    signal: str
    thickness: float

    def record(self) -> dict:
        """Flat dict for a Hugging Face ``datasets`` row (see ``data.build.FEATURES``)."""
        g, n, c = self.conditions.geometry, self.conditions.noise, self.columns
        return {
            "noisy": self.noisy.astype(np.float32), "clean": self.clean.astype(np.float32),
            "heatmap": self.heatmap.astype(np.float32),
            "columns_x_px": c.x_px.astype(np.float32), "columns_y_px": c.y_px.astype(np.float32),
            "columns_x_A": c.x_A.astype(np.float32), "columns_y_A": c.y_A.astype(np.float32),
            "columns_element": list(c.element), "columns_Z": c.Z.astype(np.int32),
            "columns_composition": list(c.composition), "columns_occupancy": c.occupancy.astype(np.float32),
            "columns_z_weight": c.z_weight.astype(np.float32), "columns_visible": c.visible.astype(bool),
            "signal": self.signal, "pixel_size": float(g.pixel_size), "dose": float(n.dose),
            "thickness": float(self.thickness), "rotation": float(g.rotation),
            "noise": {k: float(v) for k, v in asdict(n).items()},
            "geometry": {"offset": [float(v) for v in g.offset], "drift": [float(v) for v in g.drift],
                         "jitter": float(g.jitter)},
        }


def make_sample(repeat: RepeatImage, conditions: Conditions, rng: np.random.Generator, signal: str = "haadf",
                heatmap_sigma: float = 0.3, min_visible_weight: float = 0.0) -> Sample:
    geometry, noise = conditions.geometry, conditions.noise
    steady = replace(geometry, jitter=0.0)
    fraction = render(repeat, steady, signal, noise.source_sigma)
    jittered = render(repeat, geometry, signal, noise.source_sigma, rng) if geometry.jitter > 0 else fraction
    background = noise.background_field(fraction, rng)
    clean = noise.expected_signal(fraction, background, geometry.pixel_size)
    noisy = noise.sample(jittered, background, geometry.pixel_size, rng)
    labels = column_labels(repeat, steady, min_visible_weight=min_visible_weight)
    return Sample(noisy.astype(np.float32), clean.astype(np.float32),
                  heatmap(labels, geometry.shape, heatmap_sigma), labels, conditions, signal, repeat.thickness)


def draw_sample(simulator, structure, uvw, rng: np.random.Generator, ranges, shape: tuple[int, int],
                thicknesses=(20.0, 40.0, 80.0, 160.0), dose: float | None = None, signal: str = "haadf",
                min_visible_weight: float = 0.12) -> Sample:
    """One evaluation image of ``structure`` along ``uvw`` under conditions drawn from ``ranges``
    (benchmarks and calibration; ``dose`` pins the dose for per-bin scores)."""
    from data.noise import draw_conditions

    repeat = simulator.simulate(structure, uvw, float(rng.choice(thicknesses)))
    cond = draw_conditions(rng, ranges, shape, repeat.cell)
    if dose is not None:
        cond = replace(cond, noise=replace(cond.noise, dose=float(dose)))
    return make_sample(repeat, cond, rng, signal, min_visible_weight=min_visible_weight)
