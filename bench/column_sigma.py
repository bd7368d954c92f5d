"""How well the convolution path predicts multislice column intensities: the tolerance the closed
loop's column-intensity term (model.verify.COLUMN_SIGMA) can honestly ask for.

    python bench/column_sigma.py [--pairs 8] [--split val] [--thickness 40] [--min-weight 0.12]

For (entry, zone axis) pairs of the validation split (never the benchmark's test split), both paths
simulate the same repeat unit, noise-free, rendered on one grid (0.1 Å pixels). At the compared
columns, the multislice intensities d are compared with the scaled convolution intensities k·m
exactly as ``model.verify.verify`` does; the rms of (d - k·m)/mean(d) is the relative column error.
The same is done for the structure with its two heaviest species swapped, as a stand-in for an
isostructural wrong candidate. Both are also given relative to the fitted brightest column, k·max(m)
(``*_brightest``: the scale of ``model.verify.column_residuals`` the loop uses). For the columns
under half the brightest, the median of d / (k·m) says how far the loop's faint columns are off; for
columns it makes alike (same species and intensity), the spread of d says what depth alone does.

``--min-weight``: which columns are compared, by Z^1.7 weight relative to the brightest (the loop's
``model.verify.COLUMN_MIN_WEIGHT``; 0 compares every column). Writes bench/results/column_sigma.json.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np


def drawn_pairs(split: str, n: int, seed: int) -> list:
    """The (entry, zone axis) pairs these measurements draw: ``n`` bulk pairs of two or more elements from
    ``split``, in the order of ``seed`` (bench/depth_object.py reads the same ones)."""
    from data.library import zone_axis_pairs

    pairs = [(e, z) for e, z in zone_axis_pairs(split, kind="bulk") if len(e.structure.composition) >= 2]
    rng = np.random.default_rng(seed)
    return [pairs[int(i)] for i in rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--split", default="val")
    ap.add_argument("--thickness", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--min-weight", type=float, default=0.12)
    ap.add_argument("--out", default="bench/results/column_sigma.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from data.scan import ScanGeometry, column_labels, render
    from data.simulate import SimulationConfig, Simulator
    from model.verify import column_error, column_residuals, column_values, loop_simulator

    ms = Simulator(config=SimulationConfig(method="multislice"), cache_dir=".cache/repeats")
    cv = loop_simulator()
    rows = []
    for entry, za in drawn_pairs(args.split, args.pairs, args.seed):
        geom = ScanGeometry(shape=(128, 128), pixel_size=0.1)
        rep_ms = ms.simulate(entry.structure, za["uvw"], args.thickness)
        d_img = render(rep_ms, geom)
        labels = column_labels(rep_ms, geom, margin=-2.0, min_visible_weight=args.min_weight)
        if labels.visible.sum() < 3:
            continue
        true_img = render(cv.simulate(entry.structure, za["uvw"], args.thickness), geom)
        els = sorted(entry.structure.composition.elements, key=lambda e: -e.Z)
        swapped = entry.structure.copy()
        swapped.replace_species({els[0]: els[1], els[1]: els[0]})
        swap_img = render(cv.simulate(swapped, za["uvw"], args.thickness), geom)
        row = {"pair": f"{entry.id} [{za['label']}]", "columns": int(labels.visible.sum())}
        for scale, tag in (("mean", ""), ("brightest", "_brightest")):
            row[f"true_rel_error{tag}"] = round(column_error(d_img, true_img, labels, scale), 4)
            row[f"swapped_rel_error{tag}"] = round(column_error(d_img, swap_img, labels, scale), 4)
        # the faint columns (under half the brightest in the loop's simulation): multislice over it, each scaled
        # as column_residuals does; what the loop's model gets wrong where a light partner sits
        m = column_values(true_img, labels)
        r = column_residuals(d_img, true_img, labels, scale="brightest")
        faint = m < 0.5 * m.max()
        if faint.any():
            row["faint_columns"] = int(faint.sum())
            row["faint_multislice_over_loop"] = round(float(np.median(1 + r[faint] * m.max() / m[faint])), 3)
        # columns the loop's model makes alike (same species, intensity within 2 %) that multislice parts: the
        # same column at another depth in the repeat, which a depth-blind object cannot tell (bench/depth_object.py)
        d = column_values(d_img, labels)
        comp = np.array(labels.composition)[labels.visible]
        spreads = [np.ptp(d[g]) / d[g].max() for c in set(comp) for g in [np.flatnonzero(comp == c)]
                   if len(g) > 1 and np.ptp(m[g]) < 0.02 * m[g].max()]
        if spreads:
            row["alike_columns_multislice_spread"] = round(float(max(spreads)), 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"pairs": len(rows), "thickness": args.thickness, "min_weight": args.min_weight}
    for tag in ("", "_brightest"):
        t = [r[f"true_rel_error{tag}"] for r in rows]
        w = [r[f"swapped_rel_error{tag}"] for r in rows]
        summary |= {f"median_true_rel_error{tag}": round(float(np.median(t)), 4),
                    f"max_true_rel_error{tag}": round(float(np.max(t)), 4),
                    f"median_swapped_rel_error{tag}": round(float(np.median(w)), 4)}
    f = [r["faint_multislice_over_loop"] for r in rows if "faint_multislice_over_loop" in r]
    if f:
        summary |= {"pairs_with_faint_columns": len(f), "faint_multislice_over_loop_range": [min(f), max(f)]}
    a = [r["alike_columns_multislice_spread"] for r in rows if "alike_columns_multislice_spread" in r]
    if a:
        summary |= {"median_alike_columns_multislice_spread": round(float(np.median(a)), 3),
                    "max_alike_columns_multislice_spread": max(a)}
    print(json.dumps(summary))
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
