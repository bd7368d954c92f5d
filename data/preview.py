"""Look at a built dataset: a figure of samples (noisy, clean, column target) and a summary.

    python -m data.preview datasets/demo --out results/demo_preview.png [--split train] [--n 4]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data.preview", description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--out", type=Path, default=Path("results/preview.png"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--n", type=int, default=4)
    args = ap.parse_args(argv)
    from datasets import load_from_disk

    try:
        dd = load_from_disk(str(args.dataset))
    except FileNotFoundError:
        print(f"error: no dataset at {args.dataset}; build one with `python -m data.build`", file=sys.stderr)
        return 2
    if args.split not in dd:
        print(f"error: split {args.split!r} not in {list(dd)}", file=sys.stderr)
        return 2
    for split, ds in dd.items():
        protos = Counter(ds["prototype"])
        print(f"{split:>5}: {len(ds)} samples, {len(set(ds['template_id']))} materials, "
              f"prototypes {dict(protos.most_common(6))}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ds = dd[args.split].with_format("numpy")
    n = min(args.n, len(ds))
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for k in range(n):
        row = ds[k]
        for ax, key in zip(axes[k], ("noisy", "clean", "heatmap")):
            ax.imshow(row[key], cmap="magma" if key == "heatmap" else "gray")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[k, 1].plot(row["columns_x_px"], row["columns_y_px"], "c+", ms=4)
        axes[k, 0].set_title(f"{row['template_id']} {row['zone_label']}\n"
                             f"{row['dose']:.0e} e/Å², {row['pixel_size']:.3f} Å/px", fontsize=8)
        axes[k, 1].set_title(f"clean + {len(row['columns_x_px'])} column labels", fontsize=8)
        axes[k, 2].set_title(f"target, t = {float(np.asarray(row['thickness'])):.0f} Å", fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
