"""Why the closed loop misses the truth when retrieval offers it: the truth's scores (verification,
its NCC and column-intensity parts, lattice prior) next to the chosen candidate's, for every
benchmark image whose truth was among the candidates but not kept.

    python bench/loop_diagnosis.py [--data datasets/bench-pipeline] [--variant full]

Reads bench/results/<set>/<variant>.jsonl (bench/pipeline.py run) and reruns those images through
``Pipeline.run``. Writes bench/results/loop_diagnosis.json.
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
    ap.add_argument("--out", default="bench/results/loop_diagnosis.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from datasets import load_from_disk

    from data.io import LoadedImage
    from model.pipeline import Options, Pipeline

    rows = [json.loads(line) for line in (Path("bench/results") / args.data.name / f"{args.variant}.jsonl")
            .read_text().splitlines()]
    missed = {r["id"] for r in rows if r["kind"] == "crystal" and r["truth_rank"] is not None and not r["success"]}
    ds = load_from_disk(str(args.data)).with_format("numpy")
    pipe = Pipeline.load(Options(potential="none"))
    keys = ("template_id", "zone_axis", "rank", "source", "score", "verification_score", "ncc", "intensity_score",
            "lattice_prior", "lattice_prior_sigma", "template_strain")
    out = []
    for i in range(len(ds)):
        row = ds[i]
        if str(row["id"]) not in missed:
            continue
        res = pipe.run(LoadedImage(np.asarray(row["image"], np.float32), float(row["pixel_size"]), "flag",
                                   str(row["id"]), "npy"))
        cands = res.report["candidates"]
        truth = next(c for c in cands if c["template_id"] == str(row["template_id"])
                     and list(c["zone_axis"]) == [int(v) for v in row["zone_axis"]])
        chosen = (res.report.get("template") or {}).get("id")
        kept = next((c for c in cands if c["template_id"] == chosen), None)
        rec = {"id": str(row["id"]), "accepted": res.accepted, "truth": {k: truth.get(k) for k in keys},
               "chosen": {k: kept.get(k) for k in keys} if kept else None}
        out.append(rec)
        print(json.dumps(rec), flush=True)
    scores = [r["truth"]["intensity_score"] for r in out if r["truth"]["intensity_score"] is not None]
    def below(key):  # the truth scored lower than the candidate kept
        return int(sum(r["chosen"] is not None and (r["truth"][key] or -1) < (r["chosen"][key] or -1) for r in out))

    summary = {"images": len(out), "truth_intensity_score_below_0.1": int(sum(s < 0.1 for s in scores)),
               "truth_intensity_scored": len(scores), "truth_verification_below_chosen": below("verification_score"),
               "truth_lattice_prior_below_chosen": below("lattice_prior"),
               "truth_intensity_below_chosen": below("intensity_score"), "truth_ncc_below_chosen": below("ncc")}
    print(json.dumps(summary))
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
