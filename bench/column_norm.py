"""Does the closed loop's column-intensity term favour the wrong candidate because of how it normalises?

    python bench/column_norm.py [--data datasets/bench-pipeline] [--variant full] [--mean-sigma 0.10]
                                [--sigma-file bench/results/column_sigma.json]

The loop's column-intensity term used to divide the residuals by the mean observed column intensity
(``model.verify.column_residuals``, ``scale="mean"``). A candidate that makes faint columns visible
(MnO's O) lowers that mean, so each of its residuals counts more than for a look-alike whose light
columns stay invisible (TaC's C). The alternative divides by the fitted brightest column, k·max(m),
which does not depend on the faint columns (``"brightest"``, the loop's ``COLUMN_SCALE`` since).

For every benchmark crystal whose truth was among ``<variant>``'s candidates (bench/pipeline.py
run), the image is denoised and its candidates reconstructed and verified as ``Pipeline.candidates``
does (pixel size given). Every candidate is then scored with both normalisations, each with its own
tolerance: ``--mean-sigma`` (the loop's tolerance while it used the mean) for the mean, and that scaled
by the ratio of the two median true-structure errors of bench/column_sigma.py (validation split) for
the brightest column. Counts how often the truth ranks first under each (no refusal threshold: that
needs a recalibration). Writes bench/results/column_norm.json.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("datasets/bench-pipeline"))
    ap.add_argument("--variant", default="full")
    ap.add_argument("--mean-sigma", type=float, default=0.10)
    ap.add_argument("--sigma-file", type=Path, default=Path("bench/results/column_sigma.json"))
    ap.add_argument("--out", default="bench/results/column_norm.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from datasets import load_from_disk

    from model.pipeline import ANALYSIS_SIZE, Options, Pipeline
    from model.verify import verify_repeat

    sig = json.loads(args.sigma_file.read_text())["summary"]
    sigmas = {"mean": args.mean_sigma,
              "brightest": args.mean_sigma * sig["median_true_rel_error_brightest"] / sig["median_true_rel_error"]}
    rows = [json.loads(line) for line in (Path("bench/results") / args.data.name / f"{args.variant}.jsonl")
            .read_text().splitlines()]
    offered = {r["id"] for r in rows if r["kind"] == "crystal" and r["truth_rank"] is not None}
    ds = load_from_disk(str(args.data)).with_format("numpy")
    pipe = Pipeline.load(Options(potential="none"))
    o = pipe.options
    out = []
    for i in range(len(ds)):
        row = ds[i]
        if str(row["id"]) not in offered:
            continue
        image, px = np.asarray(row["image"], np.float32), float(row["pixel_size"])
        if max(image.shape) > ANALYSIS_SIZE:
            raise SystemExit(f"{row['id']}: larger than the loop's analysis window; not handled here")
        den = pipe.denoiser(image, px)
        results = [r for r in pipe.candidates(den.denoised, den.columns, px) if r.verification is not None]
        ranked = {}
        for scale, sigma in sigmas.items():
            scores = []
            for r in results:
                rec = r.reconstruction
                v = verify_repeat(pipe.simulator.simulate(rec.structure, rec.uvw, o.thickness), rec, den.denoised, px,
                                  column_scale=scale, column_sigma=sigma)
                scores.append(v.score * r.prior)
            ranked[scale] = sorted(zip(scores, range(len(results))), key=lambda t: -t[0])
        is_truth = [r.candidate["template_id"] == str(row["template_id"])
                    and list(r.candidate["zone_axis"]) == [int(v) for v in row["zone_axis"]] for r in results]
        rec = {"id": str(row["id"]), "truth": str(row["template_id"])}
        for scale, rk in ranked.items():
            pos = next((n for n, (_, j) in enumerate(rk) if is_truth[j]), None)
            rec[scale] = {"truth_rank": None if pos is None else pos + 1,
                          "top": results[rk[0][1]].candidate["template_id"],
                          "top_score": round(rk[0][0], 4),
                          "truth_score": None if pos is None else round(rk[pos][0], 4)}
        out.append(rec)
        print(json.dumps(rec), flush=True)
    summary = {"images": len(out), "sigmas": {k: round(v, 4) for k, v in sigmas.items()}}
    for scale in sigmas:
        summary[f"truth_first_{scale}"] = int(sum(r[scale]["truth_rank"] == 1 for r in out))
    summary["gained"] = sorted(r["id"] for r in out if r["brightest"]["truth_rank"] == 1 != r["mean"]["truth_rank"])
    summary["lost"] = sorted(r["id"] for r in out if r["mean"]["truth_rank"] == 1 != r["brightest"]["truth_rank"])
    print(json.dumps(summary))
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
