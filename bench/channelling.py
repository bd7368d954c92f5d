"""How the convolution path's HAADF signal saturates with thickness, fitted against multislice.

The convolution image is a single-scattering estimate: linear in thickness, so a heavy column 160 Å
thick is eight times as bright as at 20 Å. Multislice is not: the probe channels down a heavy column
and the share of the beam it can send to the detector saturates, so the ratio of heavy to light
columns falls as the specimen thickens (WSe2 [110]: the convolution path's column intensities are off
multislice by 6 % of the brightest column at 20 Å and by 42 % at 160 Å). The model fitted here reads
each probe position's linear detector fraction I through

    I_sat = k·I / (1 + (k·I / s)^q)^(1/q)

(``data.simulate.saturate``): linear for a weak signal, never above s, levelling off the more abruptly
the larger q. The shape of the image depends on s/k and q, fitted on a grid to the column intensities
(what the loop's intensity term compares, ``model.verify.column_error`` with the brightest-column
scale); k is then the median absolute scale that brings the saturated image onto multislice. All three
are ``data.simulate.SATURATION_FIT``.

Fitted on training-split crystals only (multislice thickness series, 20-160 Å, every atom placed
exactly), so the test split's materials stay unseen; ``--check`` scores other crystals with the fitted
constants without refitting (e.g. the WSe2/MoSe2 pair the benchmark confuses). One level for every
column does not serve every crystal: SrTiO3 [100]'s Sr columns keep their ratio to the Ti-O columns up
to 160 Å, and the fit makes it worse, which is why the loop leaves it off by default (README,
Reconstruction, item 7).

The per-column alternative is fitted beside it and reported, not shipped (``channelled``): each column
shows lambda·(1 - exp(-t/lambda)) of the thickness t, with a channelling length lambda that shrinks as a
power of the column's sum of Z^a per Å, on a grid of length, power and a (``channelling`` in the JSON,
with the best fit for each a, and ``channelled`` beside ``linear`` and ``saturated`` in every row).

    python bench/channelling.py [--crystals ID:uvw,...] [--check ID:uvw,...] [--out JSON]
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from data.library import get_entry
from data.scan import ScanGeometry, column_labels, render
from data.simulate import SATURATION_FIT, Microscope, RepeatImage, SimulationConfig, Simulator, saturate
from data.zone_axes import column_members, describe
from model.verify import column_error

# training-split crystals from Al to Au, cubic, tetragonal, hexagonal and layered, light and heavy columns
CRYSTALS = ("Au-fcc:110", "Cu3Au-l12:100", "AlSb-zincblende:110", "BaZrO3-perovskite:100", "HfSe2-cdi2:110",
            "Ge-diamond:110", "Al-fcc:110", "IrO2-rutile:001", "FePt-l10:100", "LaSb-rocksalt:110", "Ir-fcc:100",
            "GaSb-zincblende:110", "SrTiO3-perovskite:100", "EuTiO3-perovskite:100")
THICKNESSES = (20.0, 40.0, 80.0, 160.0)
LEVELS = np.geomspace(0.05, 1.0, 23)  # s/k, detector fraction of the linear model
SHARPNESS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# the per-column alternative (``channelled``): lambda = length · (rho / 10^a)^-power, rho = sum of Z^a per Å
LENGTHS = np.geomspace(10.0, 3000.0, 31)  # Å: the channelling length of a column of rho = 10^a
POWERS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
DENSITY_EXPONENTS = (0.5, 1.0, 1.7, 2.5)  # a


def parse(spec: str) -> tuple[str, tuple[int, ...]]:
    eid, uvw = spec.split(":")
    return eid, tuple(int(c) for c in uvw)


def cases_of(specs, ms: Simulator, cv: Simulator) -> list[dict]:
    geom = ScanGeometry(shape=(128, 128), pixel_size=0.1)
    out = []
    for spec in specs:
        eid, uvw = parse(spec)
        entry = get_entry(eid)
        _, atoms, cols = describe(entry.structure, uvw)
        t = time.perf_counter()
        refs = ms.thickness_series(entry.structure, uvw, THICKNESSES)
        print(f"{spec}: multislice series {time.perf_counter() - t:.0f} s", flush=True)
        parts, psf = cv.atom_potentials(atoms), cv.probe_psf(atoms)
        per_a = cv.convolve(cv.incoherent_object(atoms, parts), psf, 1.0)  # linear, per Å of thickness
        # the same image column by column (it is linear in the atoms' weights), and each column's Z per Å
        members, _ = column_members(atoms)
        basis = np.stack([cv.convolve(cv.incoherent_object(atoms, parts, weights=np.isin(np.arange(len(atoms)), m)),
                                      psf, 1.0) for m in members])
        numbers = [atoms.numbers[m].astype(float) for m in members]
        cell = (float(atoms.cell[0, 0]), float(atoms.cell[1, 1]))
        for ref in refs:
            out.append({"crystal": spec, "thickness": round(float(ref.thickness), 2), "linear": per_a * ref.thickness,
                        "basis": basis, "numbers": numbers, "repeat": float(atoms.cell[2, 2]),
                        "ref": ref.signals["haadf"], "R": render(ref, geom),
                        "labels": column_labels(ref, geom, margin=-2.0, min_visible_weight=0.12),
                        "cell": cell, "cols": cols, "geom": geom})
    return out


def channelled(case: dict, length: float, power: float, a: float) -> np.ndarray:
    """The convolution image with each column showing lambda·(1 - exp(-t/lambda)) of the thickness t instead
    of all of it: linear while thin, levelling off at lambda, a length that shrinks as the column's
    rho = sum of Z^a per Å grows (lambda = length at rho = 10^a). The image is linear in each column's share."""
    rho = np.array([(z ** a).sum() for z in case["numbers"]]) / case["repeat"]
    lam = length * (rho / 10.0 ** a) ** (-power)
    return np.tensordot(-lam * np.expm1(-case["thickness"] / lam), case["basis"], axes=1)


def evaluate(case: dict, level: float | None, q: float = 1.0, k: float = 1.0, image: np.ndarray | None = None) -> dict:
    """Column error and correlation against multislice of ``image``, or else of the linear image read through
    ``saturate`` at ``level`` (None: as it is); ``scale``, what brings it onto multislice's level."""
    img = image
    if img is None:
        img = case["linear"] if level is None else saturate(k * case["linear"], level * k, q)
    C = render(RepeatImage({"haadf": img}, case["cell"], case["thickness"], case["cols"], "convolution"), case["geom"])
    return {"column_error": float(column_error(case["R"], C, case["labels"], scale="brightest")),
            "correlation": float(np.corrcoef(img.ravel(), case["ref"].ravel())[0, 1]),
            "scale": float((img * case["ref"]).sum() / (img * img).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crystals", type=lambda t: t.split(","), default=list(CRYSTALS))
    ap.add_argument("--check", type=lambda t: t.split(","), default=[], help="scored with the fitted constants")
    ap.add_argument("--cache", default=".cache/validation")
    ap.add_argument("--out", default="bench/results/channelling.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    mic = Microscope()
    ms = Simulator(mic, SimulationConfig(method="multislice"), args.cache)
    cv = Simulator(mic, SimulationConfig(method="convolution", convolution_object="atoms"))
    cases = cases_of(args.crystals, ms, cv)
    grid = {(float(s), q): [evaluate(c, s, q)["column_error"] for c in cases] for s in LEVELS for q in SHARPNESS}
    level, q = min(grid, key=lambda p: np.mean(grid[p]))
    k = float(np.exp(np.median([np.log(evaluate(c, level, q)["scale"]) for c in cases])))
    chan = {(float(L), p, a): [evaluate(c, None, image=channelled(c, L, p, a))["column_error"] for c in cases]
            for L in LENGTHS for p in POWERS for a in DENSITY_EXPONENTS}

    def best_of(keys):
        return min(keys, key=lambda key: np.mean(chan[key]))

    best = best_of(chan)
    kc = float(np.exp(np.median([np.log(evaluate(c, None, image=channelled(c, *best))["scale"]) for c in cases])))
    report = {"thicknesses": list(THICKNESSES), "fitted_on": args.crystals,
              "fitted": {"saturation": round(level * k, 4), "sharpness": q, "scale_factor": round(k, 4),
                         "level_over_k": round(level, 5)},
              "channelling": {"length": round(best[0], 2), "power": best[1], "density_exponent": best[2],
                              "scale_factor": round(kc, 4),
                              "best_per_density_exponent": {
                                  str(key[2]): {"length": round(key[0], 2), "power": key[1],
                                                "mean_column_error": round(float(np.mean(chan[key])), 4)}
                                  for key in (best_of([k for k in chan if k[2] == a]) for a in DENSITY_EXPONENTS)},
                              "mean_column_error": {f"{L:.4g}, {p}, {a}": round(float(np.mean(v)), 4)
                                                    for (L, p, a), v in chan.items()}},
              "shipped": SATURATION_FIT,
              "mean_column_error": {f"{s:.4g}, {q}": round(float(np.mean(v)), 4) for (s, q), v in grid.items()},
              "cases": [], "check": []}

    def rows(cs):
        out = []
        for c in cs:
            lin, sat = evaluate(c, None), evaluate(c, level, q, k)
            ch = evaluate(c, None, image=kc * channelled(c, *best))
            out.append({"crystal": c["crystal"], "thickness": c["thickness"],
                        "linear": {key: round(v, 4) for key, v in lin.items()},
                        "saturated": {key: round(v, 4) for key, v in sat.items()},
                        "channelled": {key: round(v, 4) for key, v in ch.items()}})
            print(json.dumps(out[-1]), flush=True)
        return out

    def summary(rs):
        models = ("linear", "saturated", "channelled")
        return {m: {model: round(float(np.median([r[model][key] for r in rs])), 4) for model in models}
                for m, key in (("median_column_error", "column_error"), ("median_correlation", "correlation"))} | {
            "max_column_error": {model: round(max(r[model]["column_error"] for r in rs), 4) for model in models}}

    report["cases"] = rows(cases)
    report["summary"] = summary(report["cases"])
    if args.check:
        report["check"] = rows(cases_of(args.check, ms, cv))
        report["check_summary"] = summary(report["check"])
    channelling = {key: v for key, v in report["channelling"].items() if key != "mean_column_error"}
    print("fitted", report["fitted"], "\nchannelling", channelling, "\nsummary", report["summary"],
          "\ncheck", report.get("check_summary"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
