"""Column-extraction choices of the denoiser on the *validation* split (never on test materials).

    python bench/denoiser_val.py [--dataset datasets/stem-train-atoms]

For the shipped checkpoint: F1 against visible columns for heatmap thresholds 0.2-0.5 (all doses and
dose >= 3e3 e/Å²), and the localisation RMSE of heatmap-centroid refinement vs a parabolic peak fit
on the denoised image. Writes bench/results/denoiser_val.json.
"""
import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from data.scan import refine_peak
from model.columns import extract_columns, match_columns
from model.denoiser import Denoiser, normalize

THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)


def denoised_peak(den: np.ndarray, heat: np.ndarray, px: float) -> np.ndarray:
    cols = extract_columns(heat, den, px)
    xy = np.stack([cols.x_px, cols.y_px], 1)
    r = max(1, int(round(0.25 / px)))
    for k, (x, y) in enumerate(xy):
        q = np.array(refine_peak(den, x, y, r))
        if np.hypot(*(q - (x, y))) * px < 0.2:
            xy[k] = q
    return xy * px


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="datasets/stem-train-atoms")
    ap.add_argument("--out", default="bench/results/denoiser_val.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from datasets import load_from_disk

    den = Denoiser.from_checkpoint()
    rows = []
    for r in load_from_disk(args.dataset)["val"].with_format("numpy"):
        norm, _, _ = normalize(r["noisy"].astype(np.float32))
        d, h = den.predict_normalized(norm)
        vis = r["columns_visible"].astype(bool)
        rows.append((d, h, float(r["pixel_size"]), np.stack([r["columns_x_A"][vis], r["columns_y_A"][vis]], 1),
                     float(r["dose"])))
    out = {"samples": len(rows), "thresholds": {}}
    for t in THRESHOLDS:
        f1 = [(match_columns(extract_columns(h, d, px, threshold=t).xy, xy).f1, dose) for d, h, px, xy, dose in rows]
        out["thresholds"][str(t)] = {"f1_all": round(float(np.mean([f for f, _ in f1])), 4),
                                     "f1_dose_ge_3e3": round(float(np.mean([f for f, z in f1 if z >= 3e3])), 4)}
    for name, fn in (("heatmap_centroid", lambda d, h, px: extract_columns(h, d, px).xy),
                     ("denoised_peak", denoised_peak)):
        sc = [match_columns(fn(d, h, px), xy) for d, h, px, xy, dose in rows if dose >= 3e3]
        out[f"rmse_pm_{name}"] = round(100 * float(np.sqrt(np.nanmean([s.rmse ** 2 for s in sc]))), 2)
    print(json.dumps(out, indent=1))
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
