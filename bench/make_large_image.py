"""Write an 8192² test image for the memory/time check of infer.py: the bundled example, mirror-tiled.

    python bench/make_large_image.py --out big8k.npy
    /usr/bin/time -v python infer.py big8k.npy --pixel-size 0.1 --potential chgnet

Mirroring keeps the field continuous at the seams (the crystal is not one lattice across them, so
only the memory and time of the run are meaningful, not its verification score).
"""
from __future__ import annotations

import argparse

import numpy as np

from data.io import load_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="examples/srtio3_001.tif")
    ap.add_argument("--repeats", type=int, default=8, help="mirror-tile blocks per side (2 tiles each)")
    ap.add_argument("--out", default="big8k.npy")
    args = ap.parse_args()
    a = load_image(args.image).array
    block = np.block([[a, a[:, ::-1]], [a[::-1], a[::-1, ::-1]]])
    big = np.tile(block, (args.repeats, args.repeats)).astype(np.float32)
    np.save(args.out, big)
    print(f"{args.out}: {big.shape[1]}×{big.shape[0]}")


if __name__ == "__main__":
    main()
