"""How wide atom columns look in Å: the constants of the pixel-size estimate for images without one
(model.pixel_size.COLUMN_SIGMA, COLUMN_SIGMA_SPREAD).

    python bench/column_width.py [--bulk 30] [--monolayers 16] [--out bench/results/column_width.json]

Images: validation-split bulk pairs and train/validation monolayers, full multislice, drawn as the
pipeline benchmark draws its own (``absolute_scale.validation_images``, here at 1e3-1e5 e/Å²), never
the benchmark's test split. Each goes through the shipped denoiser as ``Pipeline.run`` sends an image
without a pixel size (at its own sampling), and ``model.pixel_size.estimate_pixel_size`` reads the
width of its brighter columns. Recorded per image: that width in Å (with the true pixel size), and the
ratio of the estimate (with the shipped constants) to the true pixel size.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> None:
    from absolute_scale import image_arguments, images_from, spread

    args = image_arguments(__doc__.splitlines()[0], "bench/results/column_width.json").parse_args(argv)
    warnings.filterwarnings("ignore")
    from model.denoiser import Denoiser
    from model.pixel_size import COLUMN_SIGMA, COLUMN_SIGMA_SPREAD, WINDOW_SIGMAS, estimate_pixel_size
    from model.verify import multislice_simulator

    den = Denoiser.from_checkpoint()
    rows = []
    for kind, entry, uvw, dose, s in images_from(args, multislice_simulator(), dose=(1e3, 1e5)):
        px = s.conditions.geometry.pixel_size
        res = den(s.noisy, den.working_pixel_size(0.1))  # as Pipeline.run does without a pixel size
        est = estimate_pixel_size(res.denoised, res.columns)
        row = {"template_id": entry.id, "kind": kind, "zone_axis": list(uvw), "dose": dose, "pixel_size": px,
               "thickness": s.thickness, "source_size": s.conditions.noise.source_size, "columns": len(res.columns)}
        if est is not None:
            row |= {"column_sigma": est.column_sigma_px * px, "estimate_ratio": est.value / px}
        rows.append(row)
        print(json.dumps(row), flush=True)
    ok = [r for r in rows if "column_sigma" in r]
    ratio = np.log([r["estimate_ratio"] for r in ok])
    summary = {
        "images": len(rows), "estimated": len(ok),
        "column_sigma": spread([r["column_sigma"] for r in ok]),
        "column_sigma_by_kind": {k: spread([r["column_sigma"] for r in ok if r["kind"] == k])
                                 for k in ("bulk", "monolayer") if any(r["kind"] == k for r in ok)},
        "column_sigma_by_dose": {f"{lo:.0e}-{hi:.0e}": spread([r["column_sigma"] for r in ok if lo <= r["dose"] < hi])
                                 for lo, hi in ((1e3, 1e4), (1e4, 1e5)) if any(lo <= r["dose"] < hi for r in ok)},
        # what model.pixel_size is set from, and how the shipped constants do on these images
        "constants": {"COLUMN_SIGMA": round(spread([r["column_sigma"] for r in ok])["median"], 3),
                      "COLUMN_SIGMA_SPREAD": round(float(np.std(ratio, ddof=1)), 3)},
        "shipped": {"COLUMN_SIGMA": COLUMN_SIGMA, "COLUMN_SIGMA_SPREAD": COLUMN_SIGMA_SPREAD,
                    "estimate_ratio": spread(np.exp(ratio)),
                    "inside_window": round(float(np.mean(np.abs(ratio) <= WINDOW_SIGMAS * COLUMN_SIGMA_SPREAD)), 4)},
    }
    print(json.dumps(summary, indent=1))
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
