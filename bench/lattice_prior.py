"""How far the correct template's lattice sits from what an image measures: the width the pipeline's
lattice prior (model.pipeline.STRAIN_RMS) can honestly assume.

    python bench/lattice_prior.py [--images 60] [--split val] [--size 256]

Images of validation-split (entry, zone axis) pairs (never the benchmark's test split) come from the
data engine (``data.sample.draw_sample``: its rotation, pixel size 0.06-0.15 Å, scan drift, jitter and
noise; dose 5e3-1e5 e/Å²). Each goes through the shipped denoiser; the true template is aligned to the
detected columns and reconstructed with the pixel size given (``model.lattice.align_template``,
``model.reconstruct.reconstruct``), and its ``template_strain`` is recorded: the prior's argument for
the right answer. Reports its quantiles and rms, and the fitted scan distortion next to the drawn one.
Writes bench/results/lattice_prior.json.
"""
from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--split", default="val")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", default="bench/results/lattice_prior.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from data.library import zone_axis_pairs
    from data.noise import ConditionRanges
    from data.sample import draw_sample
    from model.denoiser import Denoiser
    from model.lattice import align_template, fit_lattice
    from model.reconstruct import reconstruct
    from model.verify import loop_simulator

    den = Denoiser.from_checkpoint()
    sim = loop_simulator()
    pairs = zone_axis_pairs(args.split)
    ranges = replace(ConditionRanges(), pixel_size=(0.06, 0.15))
    rng = np.random.default_rng(args.seed)
    rows = []
    while len(rows) < args.images:
        entry, za = pairs[int(rng.integers(len(pairs)))]
        dose = float(np.exp(rng.uniform(np.log(5e3), np.log(1e5))))
        s = draw_sample(sim, entry.structure, za["uvw"], rng, ranges, (args.size, args.size), dose=dose)
        g = s.conditions.geometry
        px = g.pixel_size
        res = den(s.noisy, px)
        xy = res.columns.xy
        try:
            lattice = fit_lattice(xy, res.denoised, px)
        except ValueError:
            lattice = None
        row = {"template_id": entry.id, "zone_axis": list(za["uvw"]), "dose": dose, "pixel_size": px,
               "drift": {"shear": -g.drift[0] / (px + g.drift[1]), "stretch": px / (px + g.drift[1]) - 1}}
        try:
            al = align_template(xy, entry, za["uvw"], True, pixel_size=px, intensity=res.columns.intensity,
                                lattice=lattice)
            rec = reconstruct(entry, za["uvw"], al)
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
            row["error"] = f"{type(e).__name__}: {e}"[:200]
            rows.append(row)
            continue
        row |= {"template_strain": rec.template_strain, "crystal_system": rec.crystal_system,
                "measured": rec.measured, "fitted_drift": rec.scan_distortion}
        rows.append(row)
        print(json.dumps(row), flush=True)
    ok = [r for r in rows if "template_strain" in r]
    strains = np.array([r["template_strain"] for r in ok])
    one = np.array([r["template_strain"] for r in ok if len(r["measured"]) == 1])  # drift fully separable
    more = np.array([r["template_strain"] for r in ok if len(r["measured"]) > 1])
    summary = {"images": len(rows), "aligned": int(len(strains)),
               "quantiles": {q: round(float(np.quantile(strains, float(q))), 5) for q in ("0.5", "0.9", "0.95", "0.99")},
               "rms": round(float(np.sqrt(np.mean(strains ** 2))), 5),
               "rms_one_parameter": round(float(np.sqrt(np.mean(one ** 2))), 5) if len(one) else None,
               "rms_more_parameters": round(float(np.sqrt(np.mean(more ** 2))), 5) if len(more) else None}
    print(json.dumps(summary))
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
