"""Dataset-build throughput (images/s) of both simulation paths, cold repeat cache, this machine.

    python bench/throughput.py [--samples 32] [--multislice-samples 8] [--workers 2]

Each run is a real ``data.build`` of train-split samples from configs/data.yaml with a fresh cache,
so every sample pays for its repeat-unit simulation unless two samples share one. Results go to
bench/results/throughput.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from data.build import build
from data.config import load_config


def run(method: str, samples: int, workers: int, thicknesses: list[float]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("configs/data.yaml", {
            "output": f"{tmp}/ds", "cache_dir": f"{tmp}/cache", "splits": {"train": samples},
            "shard_size": max(1, samples // (2 * workers)), "simulation.method": method,
            "thicknesses": thicknesses, "dask.workers": workers})
        t = time.perf_counter()
        out = build(cfg, progress=False)
        wall = time.perf_counter() - t
        info = json.loads((out / "build_info.json").read_text())
    return {"method": method, "samples": samples, "image_size": cfg.image_size, "thicknesses": thicknesses,
            "workers": workers, "wall_seconds": round(wall, 1), "images_per_second": round(samples / wall, 3),
            "build_info_images_per_second": info["images_per_second"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--multislice-samples", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="bench/results/throughput.json")
    args = ap.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
               "runs": [run("convolution", args.samples, args.workers, [30.0, 80.0]),
                        run("multislice", args.multislice_samples, args.workers, [30.0])]}
    for r in results["runs"]:
        print(json.dumps(r))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
