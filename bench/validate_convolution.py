"""Validate the cheap convolution path against full multislice and fit its three constants.

For each crystal: multislice HAADF of the repeat unit (abTEM, static lattice) and the convolution
image from the same abTEM potential and probe. Reports, per crystal, the column-position
agreement (pm), the column-intensity error (what the closed loop's intensity term compares), the
image correlation and the speed ratio; fits the object exponent, blur and one absolute scale for
all crystals over a small grid (minimising the mean relative image error, so shape and absolute
intensity, which sets the dose realism of the training data, both count) and writes everything to
bench/results/convolution_validation.json (``--object summed``: convolution_validation_summed.json).
The fitted constants are data.simulate.CONVOLUTION_FIT.

    python bench/validate_convolution.py [--thickness 40] [--object atoms|summed] [--crystals ID,...] [--out JSON]

Each crystal's column-intensity error is also given at every exponent of the grid (at the shipped blur),
``error_by_exponent``: where one crystal wants another power than the rest. A monolayer's atoms are each
scaled to their isolated multislice cross-section (``SimulationConfig.slab_object``, data.cross_sections);
``--slab-object potential`` scores them as bulk atoms, as before 2026-11-27.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from data.library import get_entry
from data.scan import ScanGeometry, column_labels, refine_peak, render
from data.simulate import Microscope, RepeatImage, SimulationConfig, Simulator, is_slab
from data.zone_axes import describe
from model.verify import column_error

CRYSTALS = [("SrTiO3-perovskite", (1, 0, 0)), ("GaAs-zincblende", (1, 1, 0)), ("Cu-fcc", (1, 1, 0)),
            ("MgO-rocksalt", (1, 0, 0)), ("GaN-wurtzite", (1, 1, 0)), ("MoS2-mx2_2h-1L", (0, 0, 1)),
            ("TiO2-rutile", (0, 0, 1)), ("TaSe2-mx2_2h-1L", (0, 0, 1)), ("TiS2-mx2_1t-1L", (0, 0, 1))]
EXPONENTS = (1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0)
BLURS = (0.0, 0.05, 0.1, 0.2)


def peak_shifts(a: np.ndarray, b: np.ndarray, sampling, columns, min_rel: float = 0.2) -> list[float]:
    """Distance (Å) between the maxima of a and b next to every column bright enough in a."""
    dx, dy = sampling
    ta, tb = np.tile(a, (3, 3)), np.tile(b, (3, 3))  # periodic: refine away from the edges
    ny, nx = a.shape
    out = []
    for c in columns:
        x, y = c.x / dx + nx, c.y / dy + ny
        pa, pb = refine_peak(ta, x, y, 4), refine_peak(tb, x, y, 4)
        near = np.hypot((pa[0] - x) * dx, (pa[1] - y) * dy) < 0.2
        bright = ta[int(round(pa[1])), int(round(pa[0]))] > min_rel * a.max()
        if near and bright:
            out.append(float(np.hypot((pa[0] - pb[0]) * dx, (pa[1] - pb[1]) * dy)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thickness", type=float, default=40.0)
    ap.add_argument("--object", default="atoms", choices=["atoms", "summed"])
    ap.add_argument("--crystals", type=lambda t: t.split(","),
                    help="these library ids instead of CRYSTALS (one not there along its first zone axis)")
    ap.add_argument("--slab-object", default="cross_section", choices=["cross_section", "potential"],
                    help="a monolayer's per-atom object (SimulationConfig.slab_object)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    # any library id; one not in CRYSTALS is seen along its first zone axis
    listed = dict(CRYSTALS)
    crystals = [(c, listed.get(c) or tuple(get_entry(c).zone_axes[0]["uvw"])) for c in args.crystals] if args.crystals \
        else CRYSTALS
    out = args.out or "bench/results/convolution_validation" + ("_summed" if args.object == "summed" else "") + ".json"
    warnings.filterwarnings("ignore")
    mic = Microscope()
    ms = Simulator(mic, SimulationConfig(method="multislice", thickness=args.thickness), ".cache/validation")
    cv = Simulator(mic, SimulationConfig(method="convolution", thickness=args.thickness, convolution_object=args.object,
                                         slab_object=args.slab_object))
    cases = []
    for entry_id, uvw in crystals:
        entry = get_entry(entry_id)
        _, atoms, cols = describe(entry.structure, uvw)
        cached = any(ms.cache_dir.glob(f"{ms.key(atoms)}-*.npz"))
        t = time.perf_counter()
        ref = ms.simulate(entry.structure, uvw).signals["haadf"]
        t_ms = None if cached else time.perf_counter() - t  # delete .cache/validation to time it again
        t = time.perf_counter()
        parts = cv.projected_potential(atoms) if args.object == "summed" else cv.atom_potentials(atoms)
        psf = cv.probe_psf(atoms)
        nz = 1 if is_slab(atoms) else max(1, int(round(args.thickness / atoms.cell[2, 2])))  # a monolayer is one layer
        cv.convolve(cv.incoherent_object(atoms, parts), psf, nz * atoms.cell[2, 2])
        t_cv = time.perf_counter() - t
        cases.append(dict(id=entry_id, uvw=uvw, atoms=atoms, cols=cols, ref=ref, parts=parts, psf=psf,
                          thickness=nz * atoms.cell[2, 2], t_ms=t_ms, t_cv=t_cv))
        print(f"{entry_id} {list(uvw)}: multislice {t_ms or 0:.1f} s{' (cached)' if cached else ''}, "
              f"convolution {t_cv:.2f} s")

    def evaluate(exponent, blur):
        sim = Simulator(mic, replace(cv.config, convolution_exponent=exponent, convolution_blur=blur,
                                     convolution_scale=1.0))
        rows = []
        for c in cases:
            img = sim.convolve(sim.incoherent_object(c["atoms"], c["parts"]), c["psf"], c["thickness"])
            r = float(np.corrcoef(img.ravel(), c["ref"].ravel())[0, 1])
            scale = float((img * c["ref"]).sum() / (img * img).sum())
            rows.append((r, scale, img))
        return rows

    def column_intensity_error(c, img) -> float:
        """What the loop's intensity term compares, the convolution image against multislice (0.1 Å pixels)."""
        cell = (c["atoms"].cell[0, 0], c["atoms"].cell[1, 1])
        geom = ScanGeometry(shape=(128, 128), pixel_size=0.1)
        ref = RepeatImage({"haadf": c["ref"]}, cell, c["thickness"], c["cols"], "multislice")
        conv = RepeatImage({"haadf": img}, cell, c["thickness"], c["cols"], "convolution")
        return column_error(render(ref, geom), render(conv, geom), column_labels(ref, geom, margin=-2.0, min_visible_weight=0.12))

    # the constants are the bulk object's: a monolayer weighed by its atoms' cross-sections has its own
    # absolute level, which no exponent or scale moves, so it would only pull the common scale
    own_level = args.object == "atoms" and args.slab_object == "cross_section"  # the summed object ignores it
    fit_on = [i for i, c in enumerate(cases) if not (own_level and is_slab(c["atoms"]))] or list(range(len(cases)))

    def error(rows):
        scale = float(np.exp(np.mean([np.log(rows[i][1]) for i in fit_on])))
        return np.mean([np.linalg.norm(scale * rows[i][2] - cases[i]["ref"]) / np.linalg.norm(cases[i]["ref"])
                        for i in fit_on]), scale

    # every grid point simulated once: the fit, the shipped constants and the per-exponent errors read it
    grid = {p: evaluate(*p) for p in itertools.product(EXPONENTS, BLURS)}

    def at(exponent, blur):
        return grid[(exponent, blur)] if (exponent, blur) in grid else evaluate(exponent, blur)

    best = min(grid, key=lambda p: error(grid[p])[0])
    rows = grid[best]
    rel_error, scale = error(rows)
    report = {"object": args.object, "thickness": args.thickness, "slab_object": args.slab_object,
              "microscope": {"energy": mic.energy, "semiangle": mic.semiangle, "haadf": mic.haadf},
              "fitted": {"convolution_exponent": best[0], "convolution_blur": best[1], "convolution_scale": scale,
                         "on": [cases[i]["id"] for i in fit_on]},
              "mean_relative_image_error": round(float(rel_error), 4),
              "crystals": []}
    for c, (r, s, img) in zip(cases, rows):
        cell = (c["atoms"].cell[0, 0], c["atoms"].cell[1, 1])
        sampling = (cell[0] / img.shape[1], cell[1] / img.shape[0])
        shifts = peak_shifts(c["ref"], img, sampling, c["cols"])
        col_err = column_intensity_error(c, img)
        report["crystals"].append({
            "id": c["id"], "zone_axis": list(c["uvw"]), "correlation": round(r, 4),
            "columns_compared": len(shifts), "max_column_shift_pm": round(100 * max(shifts, default=np.nan), 2),
            "mean_column_shift_pm": round(100 * float(np.mean(shifts)) if shifts else np.nan, 2),
            "column_intensity_error": round(col_err, 4), "scale_ratio_to_fit": round(s / scale, 3),
            "multislice_seconds": c["t_ms"] and round(c["t_ms"], 2), "convolution_seconds": round(c["t_cv"], 3),
            "speed_ratio": c["t_ms"] and round(c["t_ms"] / c["t_cv"], 1)})
        print(json.dumps(report["crystals"][-1]))
    report["median_column_intensity_error"] = float(np.median([c["column_intensity_error"] for c in report["crystals"]]))
    # the constants the loop and the training data use, scored the same way: what the loop's intensity
    # term is off by before any refit
    shipped = (cv.config.convolution_exponent, cv.config.convolution_blur)
    errors = {c["id"]: round(column_intensity_error(c, img), 4) for c, (_, _, img) in zip(cases, at(*shipped))}
    report["shipped"] = {"convolution_exponent": shipped[0], "convolution_blur": shipped[1],
                         "column_intensity_error": errors, "median_column_intensity_error": float(np.median(list(errors.values())))}
    by_exponent = {e: at(e, shipped[1]) for e in EXPONENTS}
    report["shipped"]["error_by_exponent"] = {
        c["id"]: {str(e): round(column_intensity_error(c, by_exponent[e][i][2]), 4) for e in EXPONENTS}
        for i, c in enumerate(cases)}
    print("shipped", report["shipped"])
    print("fitted", report["fitted"], "median column intensity error", report["median_column_intensity_error"])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
