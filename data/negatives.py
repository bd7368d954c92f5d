"""Images that are not crystals: the pipeline must refuse them (calibration and benchmark negatives)."""
from __future__ import annotations

import numpy as np
from pymatgen.core import Lattice, Structure

from data.noise import draw_conditions


def amorphous_structure(rng: np.random.Generator, element: str = "Si", box=(30.0, 30.0, 20.0),
                        density: float = 0.05, min_distance: float = 2.0, max_tries: int = 200000) -> Structure:
    """Random close packing by rejection: ``density`` atoms/Å³ (a-Si ≈ 0.05), no pair closer than
    ``min_distance`` Å (periodic box)."""
    L = np.asarray(box, float)
    n = int(density * L.prod())
    pts: list[np.ndarray] = []
    tries = 0
    while len(pts) < n and tries < max_tries:
        p = rng.uniform(0, 1, 3) * L
        tries += 1
        if pts:
            d = np.asarray(pts) - p
            d -= L * np.round(d / L)
            if (d ** 2).sum(1).min() < min_distance ** 2:
                continue
        pts.append(p)
    return Structure(Lattice.orthorhombic(*L), [element] * len(pts), np.asarray(pts) / L)


def noise_only(rng: np.random.Generator, ranges, shape: tuple[int, int]) -> np.ndarray:
    """The detector with no specimen: background, gain, offset, read noise and shot noise on a flat signal."""
    return noise_only_sample(rng, ranges, shape)[0]


def noise_only_sample(rng: np.random.Generator, ranges, shape: tuple[int, int]):
    """``noise_only``'s image and the ``Conditions`` it was drawn under (its detector's gain and offset)."""
    cond = draw_conditions(rng, ranges, shape, (10.0, 10.0))
    flat = np.full(shape, float(rng.uniform(0.02, 0.3)))
    background = cond.noise.background_field(flat, rng)
    return cond.noise.sample(flat, background, cond.geometry.pixel_size, rng).astype(np.float32), cond
