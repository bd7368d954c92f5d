"""How much of the loop's choice is the denoiser's: the loop's candidates verified again on the noise-free image.

    python bench/clean_ceiling.py [--data datasets/bench-exact97-mono] [--ids A,B|@FILE] [--top 4]

For each crystal of a set built by ``bench/pipeline.py build``, the pipeline's own stages (denoise,
``Pipeline.candidates`` on the analysis window, with today's defaults) pick and verify the candidates, as
``infer.py`` does. The best ``--top`` of them (and the truth, wherever it ranks) are then verified again on
the same window of the set's noise-free image (``clean``: the expectation of the detector signal, source
blur and background included, which is the denoiser's training target) instead of the denoised one. Where
the truth ranks first on the clean image but not on the denoised one, the denoiser's output, not the
loop's model, decided. Writes bench/results/clean_ceiling_<set>.json: per sample, each candidate's NCC,
intensity score and score both ways, and the counts.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> None:
    from pipeline import ids_arg, loop_candidates

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("datasets/bench-exact97-mono"))
    ap.add_argument("--ids", type=ids_arg, help="only these samples (ids; @FILE: one per line)")
    ap.add_argument("--top", type=int, default=4, help="candidates re-verified, best first by the loop's score")
    ap.add_argument("--out", type=Path, help="default: bench/results/clean_ceiling_<set>.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from datasets import load_from_disk

    from model.pipeline import Options, Pipeline
    from model.verify import verify

    pipe = Pipeline.load(Options(potential="none"))
    o = pipe.options
    ds = load_from_disk(str(args.data)).with_format("numpy")
    rows, t0 = [], time.time()
    for i in range(len(ds)):
        row = ds[i]
        if str(row["kind"]) != "crystal" or (args.ids and str(row["id"]) not in args.ids):
            continue
        px = float(row["pixel_size"])
        truth = (str(row["template_id"]), [int(v) for v in row["zone_axis"]])
        _, (i0, j0, h, w), verified = loop_candidates(pipe, row["image"], px)
        clean = np.asarray(row["clean"], float)[i0:i0 + h, j0:j0 + w]
        ranked = sorted(verified, key=lambda r: -r.score)
        is_truth = [(r.candidate["template_id"], list(r.candidate["zone_axis"])) == truth for r in ranked]
        chosen = [r for k, r in enumerate(ranked) if k < args.top or is_truth[k]]
        cands = []
        for r in chosen:
            v = verify(r.reconstruction, clean, px, pipe.simulator, thickness=o.thickness,
                       min_visible_weight=o.column_min_weight, fit_blur=o.fit_blur, **o.tolerance)
            on_clean = v.score * r.prior * r.pixel_prior
            cands.append({"template_id": r.candidate["template_id"], "zone_axis": list(r.candidate["zone_axis"]),
                          "truth": (r.candidate["template_id"], list(r.candidate["zone_axis"])) == truth,
                          "denoised": {"ncc": round(r.verification.ncc, 5), "intensity_score":
                                       round(r.verification.intensity_score, 5), "score": round(r.score, 5)},
                          "clean": {"ncc": round(v.ncc, 5), "intensity_score": round(v.intensity_score, 5),
                                    "score": round(on_clean, 5)}})
        best = {k: max(cands, key=lambda c: c[k]["score"]) if cands else None for k in ("denoised", "clean")}
        out = {"id": str(row["id"]), "truth": truth[0], "zone_axis": truth[1], "dose": float(row["dose"]),
               "truth_verified": any(c["truth"] for c in cands),
               "first_on_denoised": bool(best["denoised"] and best["denoised"]["truth"]),
               "first_on_clean": bool(best["clean"] and best["clean"]["truth"]), "candidates": cands}
        rows.append(out)
        print(f"{out['id']} {out['truth']}: truth first on denoised {out['first_on_denoised']}, "
              f"on clean {out['first_on_clean']}", flush=True)
    summary = {"data": str(args.data), "crystals": len(rows), "top": args.top,
               "truth_verified": sum(r["truth_verified"] for r in rows),
               "first_on_denoised": sum(r["first_on_denoised"] for r in rows),
               "first_on_clean": sum(r["first_on_clean"] for r in rows),
               "median_truth_intensity_score": {k: float(np.median([c[k]["intensity_score"] for r in rows
                                                                   for c in r["candidates"] if c["truth"]] or [np.nan]))
                                                for k in ("denoised", "clean")},
               "seconds": round(time.time() - t0, 1)}
    print(json.dumps(summary, indent=1))
    out = args.out or Path(f"bench/results/clean_ceiling_{args.data.name}.json")
    out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
