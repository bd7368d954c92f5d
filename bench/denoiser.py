"""Denoiser benchmark on test-split materials (never trained on), per dose bin.

    python bench/denoiser.py [--checkpoint checkpoints/denoiser.pt] [--per-bin 24] [--size 256]
    python bench/denoiser.py --pair A.json B.json [--out PAIRED.json]

Images come from the data engine (convolution path, random rotation, offset, pixel size 0.06-0.15
Å, source size, jitter, drift, gain, offset, read noise and background; the dose is set per bin).
Reports PSNR/SSIM against the clean image for ours and for library baselines (Gaussian filter,
non-local means, BM3D when installed), column detection P/R/F1 (0.5 Å match radius) and
localisation RMSE next to a Cramér-Rao estimate (pooled, and over the images whose own estimate is at
most 2.5 pm: monolayers and light crystals at 1e4 e/Å² are not), each image's own F1, RMSE and estimate
(``images``), and inference time on a 1024² image. Writes bench/results/denoiser.json.

``--pair`` sets two such results side by side, bin by bin, and refuses when a bin's images differ: each
bin draws its images from one random stream, so a change to how the data engine draws one image
changes every later image of that bin, and two runs are comparable only on the same images.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.restoration import denoise_nl_means, estimate_sigma

from data.config import DataConfig
from data.library import zone_axis_pairs
from data.noise import ConditionRanges
from data.sample import draw_sample
from data.simulate import Simulator
from model.columns import extract_columns, image_as_heatmap, inside, match_columns, pool_scores
from model.denoiser import Denoiser, image_quality, normalize

DOSES = (1e2, 1e3, 1e4, 1e5)
RESOLVABLE_CRB_PM = 2.5


def baselines(noisy: np.ndarray, pixel_size: float) -> dict[str, np.ndarray]:
    out = {"gaussian": ndimage.gaussian_filter(noisy, 0.15 / pixel_size)}  # σ = 0.15 Å, about half a column
    norm, mean, std = normalize(noisy)
    sigma = float(estimate_sigma(norm))
    out["nl_means"] = denoise_nl_means(norm, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                                       fast_mode=True) * std + mean
    try:
        import bm3d

        out["bm3d"] = bm3d.bm3d(norm, sigma_psd=sigma) * std + mean
    except ImportError:
        pass
    return out


def crb_pm(fraction: np.ndarray, cols_px: np.ndarray, dose: float, pixel_size: float, sigma_psf: float) -> float:
    """Cramér-Rao estimate σ ≥ σ_psf / √N per coordinate, N the electrons a column sends to the detector
    above the local minimum; median over columns, in pm."""
    r = max(2, int(round(0.6 / pixel_size)))
    ns = []
    for x, y in cols_px:
        i, j = int(round(y)), int(round(x))
        win = fraction[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
        if win.size:
            ns.append(dose * pixel_size ** 2 * float((win - win.min()).sum()))
    n = np.median(ns) if ns else np.nan
    return float(100 * sigma_psf / np.sqrt(n)) if n > 0 else float("nan")


def image_keys(result: dict, bin_: str) -> list[tuple]:
    return [(r["template_id"], r["zone_axis"], r["pixel_size"]) for r in result["bins"][bin_].get("images", [])]


def paired(a: dict, b: dict) -> dict:
    """Per dose bin, ``b`` minus ``a`` on our PSNR, SSIM, F1 and RMSE (pooled and over the resolvable
    images). ValueError when a bin either lacks its per-image rows or holds other images in ``b``."""
    out = {"a": a.get("checkpoint"), "b": b.get("checkpoint"), "bins": {}}
    for bin_ in a["bins"]:
        ka, kb = image_keys(a, bin_), image_keys(b, bin_) if bin_ in b["bins"] else None
        if not ka or ka != kb:
            raise ValueError(f"bin {bin_}: the two runs scored different images (or one has no per-image rows); "
                             "run both with the same code, --per-bin, --size and --seed")
        ra, rb = a["bins"][bin_], b["bins"][bin_]
        row = {"images": len(ka)}
        for key, part, metric in (("psnr", "ours", "psnr"), ("ssim", "ours", "ssim"),
                                  ("f1", "detection_ours", "f1"), ("rmse_pm", "detection_ours", "rmse_pm"),
                                  ("f1_resolvable", "detection_ours_resolvable", "f1"),
                                  ("rmse_pm_resolvable", "detection_ours_resolvable", "rmse_pm")):
            va, vb = ra[part][metric], rb[part][metric]
            row[key] = {"a": va, "b": vb, "b_minus_a": None if va is None or vb is None else round(vb - va, 4)}
        out["bins"][bin_] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/denoiser.pt")
    ap.add_argument("--per-bin", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--out", help="default bench/results/denoiser.json; with --pair, where to write it too")
    ap.add_argument("--pair", nargs=2, metavar=("A", "B"), help="compare two results of this script instead")
    args = ap.parse_args()
    if args.pair:
        try:
            result = paired(*(json.loads(Path(f).read_text()) for f in args.pair))
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"--pair: {e}")
        text = json.dumps(result, indent=1)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return
    warnings.filterwarnings("ignore")
    den = Denoiser.from_checkpoint(args.checkpoint)
    pairs = zone_axis_pairs("test")
    sim = Simulator(cache_dir=".cache/repeats")
    ranges = replace(ConditionRanges(), pixel_size=(0.06, 0.15))
    results = {"checkpoint": args.checkpoint, "per_bin": args.per_bin, "size": args.size, "bins": {}}
    for dose in DOSES:
        rng = np.random.default_rng([args.seed, int(dose)])
        acc: dict[str, list] = {}
        det = {"ours": [], "nl_means_peaks": []}
        crbs, images = [], []
        for _ in range(args.per_bin):
            entry, za = pairs[int(rng.integers(len(pairs)))]
            s = draw_sample(sim, entry.structure, za["uvw"], rng, ranges, (args.size, args.size),
                            thicknesses=(20.0, 40.0, 80.0), dose=dose, min_visible_weight=DataConfig.heatmap_min_weight)
            px = s.conditions.geometry.pixel_size
            res = den(s.noisy, px)
            estimates = {"noisy": s.noisy, "ours": res.denoised, **baselines(s.noisy, px)}
            for name, est in estimates.items():
                acc.setdefault(name, []).append(image_quality(s.clean, est))
            vis = s.columns.visible
            truth = np.stack([s.columns.x_A[vis], s.columns.y_A[vis]], 1)
            extent = (args.size * px, args.size * px)
            det["ours"].append(match_columns(inside(res.columns.xy, extent), inside(truth, extent)))
            nlm = estimates["nl_means"]
            det["nl_means_peaks"].append(match_columns(
                inside(extract_columns(image_as_heatmap(nlm), nlm, px, threshold=0.3).xy, extent), inside(truth, extent)))
            noise = s.conditions.noise
            fraction = (s.clean - noise.offset) / (noise.gain * noise.electrons_per_pixel(px))
            sigma_psf = np.hypot(0.35, noise.source_sigma)  # probe+column rms width (Å), 21 mrad at 200 kV
            crbs.append(crb_pm(fraction, np.stack([s.columns.x_px[vis], s.columns.y_px[vis]], 1), dose, px,
                               sigma_psf))
            sc = det["ours"][-1]  # per image: a pooled RMSE can be one hard image's (light, close columns)
            images.append({"template_id": entry.id, "zone_axis": za["label"], "pixel_size": round(px, 4),
                           "cramer_rao_pm": round(crbs[-1], 2), "f1": round(sc.f1, 4), "columns": sc.truth,
                           "rmse_pm": None if sc.matched == 0 else round(100 * sc.rmse, 2)})
        row = {name: {"psnr": round(float(np.mean([a for a, _ in v])), 2),
                      "ssim": round(float(np.mean([b for _, b in v])), 4)} for name, v in acc.items()}
        for name, scores in det.items():
            row[f"detection_{name}"] = pool_scores(scores)
        # the images whose dose carries the information: a Cramér-Rao bound of at most half the 5 pm target
        resolvable = [sc for sc, c in zip(det["ours"], crbs) if c <= RESOLVABLE_CRB_PM]
        row["detection_ours_resolvable"] = pool_scores(resolvable) | {"images": len(resolvable)}
        row["cramer_rao_pm"] = round(float(np.nanmedian(crbs)), 2)
        row["images"] = images
        results["bins"][f"{dose:.0e}"] = row
        print(f"dose {dose:.0e}: " + json.dumps({k: v for k, v in row.items() if k != "images"}))
    img = np.random.default_rng(0).poisson(20, (1024, 1024)).astype(np.float32)
    t = time.perf_counter()
    den(img, 0.1)
    results["seconds_1024px"] = round(time.perf_counter() - t, 2)
    print("1024² inference:", results["seconds_1024px"], "s")
    out = Path(args.out or "bench/results/denoiser.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
