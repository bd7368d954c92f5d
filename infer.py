"""One atomic-resolution STEM image in, a relaxed crystal structure out.

    python infer.py IMAGE [IMAGE ...] [--pixel-size ANGSTROM] [--pixel-size-error 0.01] [--column-sigma ANGSTROM]
                    [--elements Sr,Ti,O] [--specimen bulk|monolayer] [--beam-counts COUNTS [--dark-counts COUNTS]]
                    [--out DIR]
                    [--top-k K] [--lattice-k K] [--coarser-k K] [--potential auto|mattersim|chgnet|none] [--device cpu|cuda] [--quiet]

For each image, DIR/<image stem>/ gets reconstructed.cif, relaxed.cif, report.json and overlay.png.
Exit codes: 0 success; 2 bad input or options; 3 no confident structure (only report.json, with
the reason); 1 unexpected error. With several images the worst code wins (1 > 2 > 3 > 0).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

SEVERITY = {0: 0, 3: 1, 2: 2, 1: 3}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="infer.py", description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--pixel-size", type=float, help="Å per pixel; overrides the file's calibration")
    p.add_argument("--pixel-size-error", type=float, default=0.01,
                   help="relative 1σ of the pixel size (default 0.01): how far a candidate's tabulated lattice "
                        "may be from the one measured")
    p.add_argument("--column-sigma", type=float, metavar="ANGSTROM",
                   help="without a pixel size: the Gaussian σ of an atom column's image on this microscope; the "
                        "pixel size the columns' width then gives weighs the candidates (default: off, only the "
                        "lattice's shape; the report gives that estimate at model.pixel_size.COLUMN_SIGMA anyway)")
    p.add_argument("--elements", help="comma-separated elements the sample may contain, e.g. Sr,Ti,O")
    p.add_argument("--specimen", choices=["bulk", "monolayer"],
                   help="what the specimen is, when known: a monolayer and its bulk crystal project alike "
                        "(default: either)")
    p.add_argument("--beam-counts", type=float, metavar="COUNTS",
                   help="the detector's reading of the whole incident beam, in the image's units (from a detector "
                        "scan): the image is then on an absolute scale, and each candidate's implied thickness "
                        "(bulk) or layer count (monolayer) weighs in")
    p.add_argument("--dark-counts", type=float, default=0.0, metavar="COUNTS",
                   help="the detector's reading without beam (with --beam-counts; default 0)")
    p.add_argument("--out", default="results", help="output directory (default: results/)")
    p.add_argument("--top-k", type=int, default=10, help="candidates by embedding score to verify by forward simulation")
    p.add_argument("--lattice-k", type=int, default=40,
                   help="more candidates: templates whose lattice fits the image's, half of them the best-embedded, "
                        "half the closest in lattice (0: none)")
    p.add_argument("--coarser-k", type=int, default=4,
                   help="and up to this many whose lattice is closest to one of the image's lattice's index-2 "
                        "lattices (a pseudo-translation can halve the cell the columns give; with a pixel size "
                        "only; 0: none)")
    p.add_argument("--multislice-k", type=int, default=0,
                   help="re-verify up to this many close candidates by full multislice (10 s to minutes each on 2 cores; default 0: off)")
    p.add_argument("--multislice-thicknesses", metavar="T1,T2,...",
                   help="specimen thicknesses in Å the multislice re-check tries, each contender scored at its best "
                        "(one run to the largest; default: 80)")
    p.add_argument("--point-source", action="store_true",
                   help="verify candidates against a point-source simulation instead of fitting the image's source "
                        "blur (the shipped refusal threshold was calibrated with the blur fitted)")
    p.add_argument("--saturation", action="store_true",
                   help="let the verification's HAADF signal level off with thickness as multislice's does (closer on "
                        "heavy columns, worse on SrTiO3's; the shipped refusal threshold was calibrated without it)")
    p.add_argument("--potential", choices=["auto", "mattersim", "chgnet", "none"], default="auto")
    p.add_argument("--mattersim-checkpoint", help="MatterSim weights (or $STEM2STRUCT_MATTERSIM_CHECKPOINT)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--denoiser", help="denoiser checkpoint (default: checkpoints/denoiser.pt)")
    p.add_argument("--retrieval", help="retrieval checkpoint (default: checkpoints/retrieval.pt)")
    p.add_argument("--index", help="template index (default: checkpoints/template_index.npz)")
    p.add_argument("--quiet", action="store_true", help="no progress or summary (for scripts)")
    return p.parse_args(argv)


def fail(code: int, msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def parse_thicknesses(text: str | None) -> tuple[float, ...]:
    from data.io import InputError

    if not text:
        return ()
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise InputError(f"--multislice-thicknesses must be comma-separated numbers in Å, got {text!r}") from None
    if not all(0 < t <= 2000 for t in values):
        raise InputError(f"--multislice-thicknesses must lie in (0, 2000] Å, got {text!r}")
    return values


def check_beam_counts(beam: float | None, dark: float) -> None:
    from data.io import InputError

    if not math.isfinite(dark):
        raise InputError(f"--dark-counts must be a finite number, got {dark}")
    if beam is None:
        if dark != 0:
            raise InputError("--dark-counts needs --beam-counts (the absolute scale it sets up)")
        return
    if not (math.isfinite(beam) and beam > dark):
        raise InputError(f"--beam-counts ({beam:g}) must be a finite number above --dark-counts ({dark:g})")


def check_out_dir(out: Path) -> None:
    from data.io import InputError

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"--out {out} is not writable")


def main(argv=None) -> int:
    args = parse_args(argv)
    from data.io import InputError, check_pixel_size, parse_elements

    try:
        if args.pixel_size is not None:
            check_pixel_size(args.pixel_size)
        elements = parse_elements(args.elements)
        if args.top_k < 1:
            raise InputError(f"--top-k must be at least 1, got {args.top_k}")
        if args.multislice_k < 0:
            raise InputError(f"--multislice-k must be 0 or more, got {args.multislice_k}")
        thicknesses = parse_thicknesses(args.multislice_thicknesses)
        if thicknesses and args.multislice_k < 2:
            raise InputError("--multislice-thicknesses needs --multislice-k 2 or more (the re-check it sets up)")
        if args.lattice_k < 0:
            raise InputError(f"--lattice-k must be 0 or more, got {args.lattice_k}")
        if args.coarser_k < 0:
            raise InputError(f"--coarser-k must be 0 or more, got {args.coarser_k}")
        if not 0 < args.pixel_size_error < 1:
            raise InputError(f"--pixel-size-error must be a fraction between 0 and 1, got {args.pixel_size_error}")
        if args.column_sigma is not None and not (0 < args.column_sigma <= 2):
            raise InputError(f"--column-sigma must be a width in Å above 0 and up to 2, got {args.column_sigma}")
        check_beam_counts(args.beam_counts, args.dark_counts)
        out = Path(args.out)
        check_out_dir(out)
    except InputError as e:
        return fail(2, str(e))

    say = (lambda s: None) if args.quiet else (lambda s: print(f"  … {s}", file=sys.stderr, flush=True))
    if args.quiet:
        warnings.filterwarnings("ignore")
    from model.denoiser import CheckpointError
    from model.pipeline import Options, Pipeline
    from model.relax import PotentialError
    from model.retrieval import RetrievalError

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return fail(2, "--device cuda: no CUDA device is available")
    options = Options(top_k=args.top_k, lattice_k=args.lattice_k, coarser_k=args.coarser_k, elements=elements,
                      specimen=args.specimen,
                      pixel_size_error=args.pixel_size_error, potential=args.potential,
                      potential_checkpoint=args.mattersim_checkpoint, device=args.device,
                      multislice_k=args.multislice_k, multislice_thicknesses=thicknesses,
                      beam_counts=args.beam_counts, dark_counts=args.dark_counts, column_sigma=args.column_sigma,
                      fit_blur=not args.point_source, saturation=args.saturation)
    say("loading models")
    try:
        pipe = Pipeline.load(options, args.denoiser, args.retrieval, args.index)
    except (CheckpointError, RetrievalError, PotentialError) as e:
        return fail(2, str(e))

    worst = 0
    for path in args.images:
        code = run_one(pipe, path, args, out, say)
        worst = max(worst, code, key=SEVERITY.get)
    return worst


def run_one(pipe, path, args, out, say) -> int:
    from data.io import InputError, load_image
    from model.outputs import summary_lines, write_result

    try:
        image = load_image(path, args.pixel_size)
    except InputError as e:
        return fail(2, str(e))
    if not args.quiet:
        print(f"{path}: {image.array.shape[1]}×{image.array.shape[0]} px, pixel size "
              + (f"{image.pixel_size:.4f} Å ({image.pixel_size_source})" if image.pixel_size else "unknown"),
              file=sys.stderr)
    try:
        result = pipe.run(image, say)
        where = write_result(result, image, out)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 — the user gets one line; the traceback is for bug reports
        if os.environ.get("STEM2STRUCT_DEBUG"):
            raise
        return fail(1, f"{path}: unexpected {type(e).__name__}: {e} (set STEM2STRUCT_DEBUG=1 for the traceback)")
    if not args.quiet:
        for line in summary_lines(result):
            print(f"  {line}")
        t = result.report["timings"]
        print("  timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()) + f"\n  → {where}/")
    return 0 if result.accepted else 3


if __name__ == "__main__":
    sys.exit(main())
