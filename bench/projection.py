"""How much a column's multislice HAADF intensity depends on where the crystal sits on the potential grid.

    python bench/projection.py [--thickness 40] [--fine]

Each crystal is simulated with its oriented cell as described (the origin, and so some atoms, on a grid
point), moved by (0.4, 0.9) Å, and moved by half a potential pixel, with abTEM's projection (bilinear
atom placement) and with ``data.projection``'s exact one. A physical image only moves with the crystal,
so every column's intensity should stay. ``--fine`` adds both at half the potential sampling, the
convergence reference. Writes bench/results/projection.json.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

CRYSTALS = [("MgO-rocksalt", (1, 0, 0)), ("SrTiO3-perovskite", (1, 0, 0)), ("Si-diamond", (1, 1, 0))]


def column_maxima(rep, columns) -> list[float]:
    """Each column's peak: the image's maximum within 0.2 Å of it (the repeat is periodic)."""
    img = rep.signals["haadf"]
    sx, sy = rep.sampling
    r = int(np.ceil(0.2 / min(sx, sy)))
    out = []
    for c in columns:
        i, j = int(round(c.y / sy)), int(round(c.x / sx))
        rows = np.arange(i - r, i + r + 1) % img.shape[0]
        cols = np.arange(j - r, j + r + 1) % img.shape[1]
        out.append(float(img[np.ix_(rows, cols)].max()))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thickness", type=float, default=40.0)
    ap.add_argument("--fine", action="store_true", help="also at half the potential sampling")
    ap.add_argument("--out", default="bench/results/projection.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from data.library import get_entry
    from data.simulate import SimulationConfig, Simulator, _described
    from data.zone_axes import Column

    base = Simulator(config=SimulationConfig(method="multislice")).sampling
    samplings = [base] + ([base / 2] if args.fine else [])
    rows = []
    for tid, uvw in CRYSTALS:
        atoms, columns, meta = _described(get_entry(tid).structure, list(uvw))
        for projection in ("abtem", "exact"):
            for sampling in samplings:
                sim = Simulator(config=SimulationConfig(method="multislice", projection=projection, sampling=sampling))
                row = {"crystal": tid, "zone_axis": list(uvw), "projection": projection, "sampling": sampling,
                       "columns": ["".join(f"{e}{n}" for e, n in sorted(c.elements.items())) for c in columns],
                       "shifts": []}
                for shift in ((0.0, 0.0), (0.4, 0.9), (sampling / 2, sampling / 2)):
                    moved = atoms.copy()
                    moved.positions[:, :2] += shift
                    moved.wrap()
                    cols = [Column(**{**c.__dict__, "x": (c.x + shift[0]) % moved.cell[0, 0],
                                      "y": (c.y + shift[1]) % moved.cell[1, 1]}) for c in columns]
                    t = time.perf_counter()
                    rep = sim.simulate_atoms(moved, cols, args.thickness, meta)
                    row["shifts"].append({"shift": list(shift), "column_peaks": column_maxima(rep, cols),
                                          "mean": float(rep.signals["haadf"].mean()),
                                          "seconds": round(time.perf_counter() - t, 1)})
                peaks = np.array([s["column_peaks"] for s in row["shifts"]])
                # a column's spread over the crystal's positions: max / min - 1
                row["position_spread"] = float(np.max(peaks.max(0) / peaks.min(0)) - 1)
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("crystal", "projection", "sampling", "position_spread")}),
                      flush=True)
    Path(args.out).write_text(json.dumps({"thickness": args.thickness, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
