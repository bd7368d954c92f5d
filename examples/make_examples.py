"""Regenerate the bundled example images with the project's data engine, with their ground truth.

    python examples/make_examples.py

The images are full multislice (abTEM, 80 Å), not the cheap convolution path that the closed loop
verifies with, so the examples do not flatter the loop. Each is a 16-bit TIFF with an ImageJ
calibration (so infer.py reads the pixel size from the file), a ``<name>_truth.cif`` of the crystal
that was simulated and a ``<name>.json`` with the template, zone axis and every imaging condition.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tifffile

from data.library import get_entry
from data.noise import Conditions, NoiseModel
from data.sample import make_sample
from data.scan import ScanGeometry
from data.simulate import SimulationConfig, Simulator

HERE = Path(__file__).resolve().parent
EXAMPLES = {
    # name: (library entry, zone axis, lattice scale, pixel size Å, dose e/Å², rotation °, seed)
    "srtio3_001": ("SrTiO3-perovskite", (1, 0, 0), 1.0, 0.1, 2e4, 12.0, 1),
    "si_110": ("Si-diamond", (1, 1, 0), 1.0, 0.08, 5e4, -25.0, 2),  # a test-split material: never trained on
}


def make(name: str, entry_id: str, uvw, scale: float, pixel_size: float, dose: float, rotation: float, seed: int,
         size: int = 512) -> None:
    structure = get_entry(entry_id).structure
    if scale != 1.0:
        structure.scale_lattice(structure.volume * scale ** 3)
    rng = np.random.default_rng(seed)
    repeat = Simulator(config=SimulationConfig(method="multislice"), cache_dir=".cache/repeats").simulate(
        structure, uvw, 80.0)
    geometry = ScanGeometry(shape=(size, size), pixel_size=pixel_size, rotation=rotation, offset=(0.4, 0.9),
                            drift=(0.0005, 0.0), jitter=0.02)
    noise = NoiseModel(dose=dose, source_size=0.3, gain=2.0, offset=40.0, read_noise=1.5, background=0.2)
    sample = make_sample(repeat, Conditions(geometry, noise), rng)
    counts = np.clip(np.round(sample.noisy), 0, 65535).astype(np.uint16)
    # ImageJ stores pixels per unit as the TIFF resolution; 'unit' names it
    px_nm = pixel_size / 10.0
    tifffile.imwrite(HERE / f"{name}.tif", counts, imagej=True, resolution=(1 / px_nm, 1 / px_nm),
                     metadata={"unit": "nm"})
    structure.to(filename=str(HERE / f"{name}_truth.cif"))
    truth = {"template_id": entry_id, "zone_axis": list(uvw), "lattice_scale": scale, "thickness": 80.0,
             "simulation": "multislice",
             "pixel_size": pixel_size, "geometry": asdict(geometry), "noise": asdict(noise), "seed": seed,
             "signal": "haadf", "shape": [size, size]}
    (HERE / f"{name}.json").write_text(json.dumps(truth, indent=1) + "\n")
    print(f"{name}: {entry_id} {list(uvw)}, {size}² at {pixel_size} Å, dose {dose:g}")


if __name__ == "__main__":
    for name, spec in EXAMPLES.items():
        make(name, *spec)
