"""Seconds to denoise (and find columns in) one image with the shipped denoiser, per device.

    python bench/denoise_speed.py [--device cpu|cuda] [--size 1024] [--pixel-size 0.1] [--repeats 5]

The first call is a warm-up (lazy imports, CUDA kernels); the median of the rest is reported.
Writes bench/results/denoise_speed_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from model.denoiser import Denoiser


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/denoiser.pt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--pixel-size", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    den = Denoiser.from_checkpoint(args.checkpoint, device=args.device)
    img = np.random.default_rng(0).poisson(20, (args.size, args.size)).astype(np.float32)
    den(img, args.pixel_size)
    times = []
    for _ in range(args.repeats):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        den(img, args.pixel_size)
        times.append(time.perf_counter() - t)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    out = {"device": name, "size": args.size, "pixel_size": args.pixel_size, "repeats": args.repeats,
           "median_seconds": round(float(np.median(times)), 3), "all_seconds": [round(t, 3) for t in times]}
    print(json.dumps(out))
    path = Path(args.out or f"bench/results/denoise_speed_{args.device.split(':')[0]}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
