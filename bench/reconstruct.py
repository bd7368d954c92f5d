"""Reconstruction benchmark on the test split (materials never trained on), per dose bin.

    python bench/reconstruct.py [--per-bin 20] [--size 256] [--limit N]

Each image (data engine, conditions drawn anew, pixel size 0.06-0.15 Å) goes through
``Pipeline.run`` as infer.py runs it (relaxation off; refusal on), in three modes:
``given`` (pixel size known, closed loop over the top 5 by embedding and 5 more whose lattice fits),
``estimated`` (pixel size unknown) and ``top1`` (pixel size known, no loop: the first retrieved
candidate is kept). Success: the
reconstructed structure matches the truth under pymatgen's StructureMatcher (default tolerances);
RMSD from ``get_rms_dist``; lattice error: mean |Δ|/x over a, b, c of the conventional cells.
Writes bench/results/reconstruct.json.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher

from data.io import LoadedImage
from data.library import zone_axis_pairs
from data.noise import ConditionRanges
from data.sample import draw_sample
from model.pipeline import Options, Pipeline
from model.reconstruct import match_truth

DOSES = (1e3, 5e3, 2e4, 1e5)
MODES = {"given": {"top_k": 5, "lattice_k": 5, "pixel": True},
         "estimated": {"top_k": 5, "lattice_k": 5, "pixel": False},
         "top1": {"top_k": 1, "lattice_k": 0, "pixel": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-bin", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", default="bench/results/reconstruct.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    pipe = Pipeline.load(Options(potential="none"))
    matcher = StructureMatcher()
    ranges = replace(ConditionRanges(), pixel_size=(0.06, 0.15))
    pairs = zone_axis_pairs("test")
    t0 = time.time()
    results = {"per_bin": args.per_bin, "size": args.size, "threshold": pipe.calibration.threshold, "modes": {}}
    for mode in args.modes.split(","):
        spec = MODES[mode]
        pipe.options = replace(pipe.options, top_k=spec["top_k"], lattice_k=spec["lattice_k"])
        bins = {}
        for b, dose in enumerate(DOSES):
            rows = []
            for n in range(args.per_bin):
                rng = np.random.default_rng([args.seed, b, n])  # same images in every mode
                entry, za = pairs[int(rng.integers(len(pairs)))]
                s = draw_sample(pipe.simulator, entry.structure, za["uvw"], rng, ranges, (args.size, args.size),
                                dose=dose)
                px = s.conditions.geometry.pixel_size
                res = pipe.run(LoadedImage(s.noisy, px if spec["pixel"] else None,
                                           "flag" if spec["pixel"] else "unknown", f"{entry.id}", "npy"))
                row = {"truth": entry.id, "zone": za["label"], "accepted": res.accepted, "success": False,
                       "rmsd": None, "lattice_error": None, "seconds": res.report["timings"]["total"]}
                if res.accepted:
                    row["template"] = res.report["template"]["id"]
                    row.update(match_truth(res.reconstructed, entry.structure, res.report["lattice"]["reconstructed"],
                                           matcher))
                rows.append(row)
            errs = [r["lattice_error"] for r in rows if r["success"]]
            bins[f"{dose:.0e}"] = {
                "success_rate": float(np.mean([r["success"] for r in rows])),
                "accepted_rate": float(np.mean([r["accepted"] for r in rows])),
                "median_lattice_error_of_matches": float(np.median(errs)) if errs else None,
                "mean_rmsd_of_matches": float(np.mean([r["rmsd"] for r in rows if r["rmsd"] is not None]))
                if errs else None,
                "seconds_per_image": float(np.mean([r["seconds"] for r in rows])), "rows": rows}
            o = bins[f"{dose:.0e}"]
            print(f"{mode} dose {dose:.0e}: success {o['success_rate']:.2f}, accepted {o['accepted_rate']:.2f}, "
                  f"median lattice error {o['median_lattice_error_of_matches']}", flush=True)
        results["modes"][mode] = bins
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
