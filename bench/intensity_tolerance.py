"""Would a tighter column-intensity tolerance part the look-alikes? Every candidate rescored offline.

    python bench/intensity_tolerance.py run --data datasets/bench-exact97 [--ids @FILE] [--rows FILE]
    python bench/intensity_tolerance.py report [--rows FILE ...] [--tolerances 0.07,0.05,0.04,0.035,0.03,0.025,0.02]

``run`` sends each sample through ``Pipeline.run`` with the defaults (the benchmark's ``full``) and keeps
every candidate's NCC, intensity score and priors (resumable, one JSON line per sample). The intensity
score is exp(-½ mean((r/σ)²)), so at another tolerance σ' it is the same score to the power (σ/σ')²:
``report`` rescores every candidate at each tolerance without simulating anything again, and gives how
often the truth's (entry, zone axis) is ranked first where it was verified, and the best score of the
negatives, which a threshold calibrated again would have to clear. ``model.verify.COLUMN_SIGMA`` was
sized against multislice whose atom placement depended on the grid (data.projection).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rescored(c: dict, tolerance: float) -> float:
    """A candidate's score (verification × priors, pixel size given, arbitrary scale) at another tolerance."""
    from model.verify import COLUMN_SIGMA, NCC_WEIGHT

    if "intensity_score" not in c:
        return -1.0
    intensity = c["intensity_score"] ** ((COLUMN_SIGMA / tolerance) ** 2)
    return (NCC_WEIGHT * max(c["ncc"], 0.0) + (1 - NCC_WEIGHT) * intensity) * c["lattice_prior"]


def run(args) -> None:
    from datasets import load_from_disk
    from tqdm import tqdm

    from data.io import LoadedImage
    from model.pipeline import Options, Pipeline

    done = {json.loads(line)["id"] for line in args.rows.open()} if args.rows.is_file() else set()
    pipe = Pipeline.load(Options(potential="none"))
    ds = load_from_disk(str(args.data)).with_format("numpy")
    with args.rows.open("a") as out:
        for i in tqdm(range(len(ds))):
            row = ds[i]
            sid = str(row["id"])
            if sid in done or (args.ids and sid not in args.ids):
                continue
            res = pipe.run(LoadedImage(np.asarray(row["image"], np.float32), float(row["pixel_size"]), "flag", sid, "npy"))
            keep = ("template_id", "zone_axis", "ncc", "intensity_score", "lattice_prior", "score")
            out.write(json.dumps({"id": sid, "kind": str(row["kind"]), "truth": str(row["template_id"]),
                                  "zone_axis": [int(v) for v in row["zone_axis"]],
                                  "candidates": [{k: c[k] for k in keep if k in c}
                                                 for c in res.report["candidates"]]}) + "\n")
            out.flush()


def report(args) -> None:
    rows = [json.loads(line) for f in args.rows for line in Path(f).open()]
    crystals = [r for r in rows if r["kind"] == "crystal"]
    negatives = [r for r in rows if r["kind"] != "crystal"]
    summary = {"crystals": len(crystals), "negatives": len(negatives), "tolerances": {}}
    for t in args.tolerances:
        first, offered, best_truth = 0, 0, []
        for r in crystals:
            scored = [(rescored(c, t), c) for c in r["candidates"]]
            truth = [s for s, c in scored if c["template_id"] == r["truth"] and list(c["zone_axis"]) == r["zone_axis"]
                     and s >= 0]
            if not truth:
                continue
            offered += 1
            top = max(scored, key=lambda sc: sc[0])
            first += top[1]["template_id"] == r["truth"] and list(top[1]["zone_axis"]) == r["zone_axis"]
            best_truth.append(max(truth))
        neg = [max((rescored(c, t) for c in r["candidates"]), default=-1.0) for r in negatives]
        top_neg = max(neg, default=None)
        summary["tolerances"][str(t)] = {
            "truth_offered": offered, "truth_ranked_first": first,
            "highest_negative_score": top_neg,
            # crystals whose truth would still clear a threshold at the highest negative score
            "truth_above_highest_negative": int(sum(s > top_neg for s in best_truth)) if top_neg is not None else None}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


def main(argv=None) -> None:
    from pipeline import DATA, ids_arg

    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=DATA)
    r.add_argument("--ids", type=ids_arg)
    r.add_argument("--rows", type=Path, default=Path("bench/results/intensity_tolerance_rows.jsonl"))
    p = sub.add_parser("report")
    p.add_argument("--rows", nargs="+", default=["bench/results/intensity_tolerance_rows.jsonl"])
    p.add_argument("--tolerances", type=lambda s: [float(v) for v in s.split(",")], default=[0.07, 0.05, 0.04, 0.035, 0.03, 0.025, 0.02])
    p.add_argument("--out", default="bench/results/intensity_tolerance.json")
    args = ap.parse_args(argv)
    {"run": run, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
