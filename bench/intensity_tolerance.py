"""Would a tighter column-intensity tolerance part the look-alikes? Every candidate rescored offline.

    python bench/intensity_tolerance.py [--rows FILE ...] [--tolerances 0.15,0.1,0.07,0.05,...]
                                        [--max-false-accept 0.01] [--out JSON]

The rows are those of a run that kept every verified candidate's NCC, intensity score and prior, and the
tolerance it was verified at:
``bench/pipeline.py run`` (one JSON line per sample) or ``bench/calibrate.py`` (its ``--results`` file).
The intensity score is exp(-½ mean((r/σ)²)), so at another tolerance σ' it is the same score to the
power (σ/σ')²: every candidate is rescored at each tolerance without simulating anything again. For
each tolerance the report gives how often the truth's (entry, zone axis) is ranked first where it was
verified, the refusal threshold a calibration on these negatives would set (``Calibration.refusal_threshold``)
and how many crystals would then be accepted, and accepted with the truth first. ``model.verify.COLUMN_SIGMA``
(7 %) was kept on what this gives for the multislice validation set (README, "A tighter tolerance?").
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def rescored(c: dict, tolerance: float, made_at: float) -> float:
    """A candidate's score (verification × priors, pixel size given, arbitrary scale) at another tolerance,
    from its terms verified at ``made_at`` (a row's ``intensity_tolerance``)."""
    from model.verify import NCC_WEIGHT

    if "intensity_score" not in c:
        return -1.0
    intensity = c["intensity_score"] ** ((made_at / tolerance) ** 2)
    return (NCC_WEIGHT * max(c["ncc"], 0.0) + (1 - NCC_WEIGHT) * intensity) * c["lattice_prior"]


def read_rows(f: Path) -> list[dict]:
    """A benchmark run's JSON lines, or a calibration's results file (a summary with its ``rows``)."""
    text = f.read_text()
    if f.suffix == ".json":
        return json.loads(text)["rows"]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def summarise(rows: list[dict], tolerances, max_false_accept: float = 0.01) -> dict:
    from model.pipeline import Calibration

    crystals = [r for r in rows if r["kind"] == "crystal"]
    negatives = [r for r in rows if r["kind"] != "crystal"]
    summary = {"crystals": len(crystals), "negatives": len(negatives), "max_false_accept": max_false_accept,
               "tolerances": {}}
    for t in tolerances:
        first, offered, best, right = 0, 0, [], []
        for r in crystals:
            scored = [(rescored(c, t, r["intensity_tolerance"]), c) for c in r["candidates"]]
            is_truth = lambda c: c["template_id"] == r["truth"] and list(c["zone_axis"]) == r["truth_zone_axis"]  # noqa: E731
            # as the pipeline scores an image none of whose candidates was verified: 0
            top = max(scored, key=lambda sc: sc[0], default=(0.0, None))
            top = top if top[0] >= 0 else (0.0, None)
            best.append(top[0])
            right.append(top[1] is not None and is_truth(top[1]))
            if any(is_truth(c) and s >= 0 for s, c in scored):
                offered += 1
                first += right[-1]
        neg = [max([0.0] + [rescored(c, t, r["intensity_tolerance"]) for c in r["candidates"]]) for r in negatives]
        threshold = Calibration.refusal_threshold(neg, max_false_accept) if neg else None
        passed = [s >= threshold for s in best] if neg else []
        summary["tolerances"][str(t)] = {
            "truth_offered": offered, "truth_ranked_first": first,
            "highest_negative_score": max(neg, default=None), "threshold": threshold,
            # with the threshold calibrated on these negatives: crystals accepted, and accepted with the truth first
            "crystals_passed": int(sum(passed)) if neg else None,
            "passed_truth_first": int(sum(p and ok for p, ok in zip(passed, right))) if neg else None}
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=Path, nargs="+", default=[Path("bench/results/intensity_tolerance_rows.jsonl")])
    ap.add_argument("--tolerances", type=lambda s: [float(v) for v in s.split(",")],
                    default=[0.15, 0.1, 0.07, 0.05, 0.04, 0.035, 0.03, 0.025, 0.02])
    ap.add_argument("--max-false-accept", type=float, default=0.01)
    ap.add_argument("--out", type=Path, default=Path("bench/results/intensity_tolerance.json"))
    args = ap.parse_args(argv)
    rows = [r for f in args.rows for r in read_rows(f)]
    summary = summarise(rows, args.tolerances, args.max_false_accept) | {"sources": [str(f) for f in args.rows]}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
