"""Peak memory and time of the denoiser on a large image (default 8192²), 2 CPU cores.

    python bench/denoiser_memory.py [--size 8192]

Writes bench/results/denoiser_memory.json. Peak RSS includes the Python process, torch and the model.
"""
import argparse
import json
import resource
import time
import warnings
from pathlib import Path

import numpy as np

from model.denoiser import Denoiser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--out", default="bench/results/denoiser_memory.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    den = Denoiser.from_checkpoint()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    img = np.random.default_rng(0).poisson(20, (args.size, args.size)).astype(np.float32)
    t = time.perf_counter()
    res = den(img, 0.1)
    out = {"size": args.size, "seconds": round(time.perf_counter() - t, 1), "columns": len(res.columns),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "rss_before_image_mb": round(before, 1), "input_mb": round(img.nbytes / 2 ** 20, 1)}
    print(json.dumps(out))
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
