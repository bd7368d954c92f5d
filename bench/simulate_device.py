"""Multislice on the GPU against the CPU: the same repeat images, and how much faster.

    python bench/simulate_device.py [--cpu-cases 2] [--out bench/results/simulate_device.json]

Each case is one library entry along one zone axis at one thickness, simulated by ``data.simulate.Simulator``
(no cache) with ``device="gpu"`` and, for the first ``--cpu-cases``, with ``device="cpu"`` too. The CPU runs
are the slow half, so the large-repeat cases (the corundum cells that the 2-core benchmark build could not
finish) run on the GPU alone. Needs CuPy.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

# (entry, zone axis, thickness Å): small repeats first, then the large orthogonal repeats of corundum
CASES = [("SrTiO3-perovskite", (1, 0, 0), 40.0), ("Si-diamond", (1, 1, 0), 80.0),
         ("Cr2O3-corundum", (1, 1, 0), 160.0), ("Cr2O3-corundum", (3, 2, 0), 160.0)]


def main(argv=None) -> None:
    from data.library import get_entry
    from data.simulate import SimulationConfig, Simulator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-cases", type=int, default=2, help="how many of the cases run on the CPU as well")
    ap.add_argument("--out", type=Path, default=Path("bench/results/simulate_device.json"))
    args = ap.parse_args(argv)
    rows = []
    for i, (entry_id, uvw, thickness) in enumerate(CASES):
        structure = get_entry(entry_id).structure
        row = {"entry": entry_id, "zone_axis": list(uvw), "thickness": thickness}
        images = {}
        for device in ("gpu", "cpu") if i < args.cpu_cases else ("gpu",):
            sim = Simulator(config=SimulationConfig(method="multislice", device=device))
            t0 = time.perf_counter()
            rep = sim.simulate(structure, uvw, thickness)
            row[f"{device}_s"] = round(time.perf_counter() - t0, 2)
            images[device] = rep.signals["haadf"]
            row["repeat_A"] = [round(v, 2) for v in rep.cell]
            row["repeat_px"] = list(images[device].shape)
        if "cpu" in images:
            a, b = images["gpu"], images["cpu"]
            row["max_rel_diff"] = float(np.abs(a - b).max() / np.abs(b).max())
            row["speedup"] = round(row["cpu_s"] / row["gpu_s"], 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu_count": os.cpu_count(), "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
