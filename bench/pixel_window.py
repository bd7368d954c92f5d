"""How much the columns' width narrows retrieval without a pixel size (``model.pixel_size``): of the templates
whose projected lattice has the image's shape, how many imply a pixel size inside the estimate's window, and
whether the truth is among them.

    python bench/pixel_window.py [--ids @bench/set97.ids] [--out bench/results/pixel_window.json]

Reads the pipeline benchmark's images (``datasets/bench-pipeline``; crystals only) as ``Pipeline.run`` does
without a pixel size: the shipped denoiser at the image's own sampling, the lattice fitted in pixels
(``model.lattice.image_lattice``), then ``Retriever.query``'s own shape test (``lattice_mismatch`` within
``LATTICE_TOL``, ``fitting_lattices``) and the window of ``estimate_pixel_size`` at the shipped constants.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> None:
    from pipeline import DATA, ids_arg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--ids", type=ids_arg, default=ids_arg("@bench/set97.ids"), metavar="ID,ID,...|@FILE")
    ap.add_argument("--out", default="bench/results/pixel_window.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from datasets import load_from_disk

    from model.denoiser import Denoiser
    from model.lattice import image_lattice, lattice_metric
    from model.pixel_size import estimate_pixel_size
    from model.retrieval import LATTICE_TOL, Retriever, fitting_lattices

    den, retriever = Denoiser.from_checkpoint(), Retriever.from_checkpoint()
    records, table = retriever.index.records, retriever.index.lattice_table()
    ds = load_from_disk(str(args.data)).with_format("numpy")
    rows = []
    for i in range(len(ds)):
        row = ds[i]
        if str(row["id"]) not in args.ids or row["kind"] != "crystal":
            continue
        res = den(np.asarray(row["image"], np.float32), den.working_pixel_size(0.1))
        est = estimate_pixel_size(res.denoised, res.columns)
        xy = np.stack([res.columns.x_px, res.columns.y_px], 1)
        out = {"id": str(row["id"]), "truth": str(row["template_id"]), "pixel_size": float(row["pixel_size"]),
               "estimate": None if est is None else est.value}
        lattice = image_lattice(xy, res.denoised, 1.0)
        if lattice is None or est is None:
            rows.append(out)
            continue
        mis, implied = fitting_lattices(lattice_metric(lattice.vectors), table, False, LATTICE_TOL, est)
        fits = mis <= LATTICE_TOL
        lo, hi = est.window()
        inside = fits & (implied >= lo) & (implied <= hi)
        truth = [k for k, r in enumerate(records) if r["template_id"] == out["truth"]
                 and list(r["zone_axis"]) == [int(v) for v in row["zone_axis"]]]
        out |= {"shape_fits": int(fits.sum()), "inside_window": int(inside.sum()),
                "truth_fits": bool(truth and fits[truth[0]]), "truth_inside": bool(truth and inside[truth[0]])}
        rows.append(out)
        print(json.dumps(out), flush=True)
    ok = [r for r in rows if "shape_fits" in r and r["shape_fits"]]
    kept = np.array([r["inside_window"] / r["shape_fits"] for r in ok])
    summary = {"crystals": len(rows), "estimated": len(ok),
               "kept_fraction": {"median": round(float(np.median(kept)), 4), "p10": round(float(np.percentile(kept, 10)), 4),
                                 "min": round(float(kept.min()), 4)},
               "median_shape_fits": float(np.median([r["shape_fits"] for r in ok])),
               "truth_fits": sum(r["truth_fits"] for r in ok),
               "truth_inside": sum(r["truth_inside"] for r in ok)}
    print(json.dumps(summary, indent=1))
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
