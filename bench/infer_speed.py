"""End-to-end seconds per image with the models already loaded, relaxation included, per stage.

    python bench/infer_speed.py [--image examples/srtio3_001.tif] [--repeats 3] [--device cpu]

Writes bench/results/infer_speed_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from data.io import load_image
from model.pipeline import Options, Pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="examples/srtio3_001.tif")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--potential", default="auto")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    t = time.perf_counter()
    pipe = Pipeline.load(Options(device=args.device, potential=args.potential))
    load_s = time.perf_counter() - t
    image = load_image(args.image)
    pipe.run(image)  # warm-up: first-call costs (simulation cache, lazy imports) are not per-image costs
    runs = []
    for _ in range(args.repeats):
        res = pipe.run(image)
        runs.append(res.report["timings"])
    stages = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    out = {"image": args.image, "shape": list(image.array.shape), "device": args.device,
           "potential": pipe.potential_info.name if pipe.potential_info else "none",
           "model_load_seconds": round(load_s, 2), "median_seconds": stages, "repeats": args.repeats,
           "accepted": res.accepted, "machine": platform.processor() or platform.machine()}
    print(json.dumps(out, indent=1))
    path = Path(f"bench/results/infer_speed_{args.device}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
