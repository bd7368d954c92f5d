"""What an image in fractions of the incident beam says about the specimen: the constants of the loop's
absolute-scale prior (model.verify.SLAB_SCALE, BULK_SCALE, ABSOLUTE_SIGMA).

    python bench/absolute_scale.py [--bulk 30] [--monolayers 16] [--split val] [--max-cell-area 120]

Images come from the data engine as the pipeline benchmark makes them (``data.sample.draw_sample`` with full
multislice: thickness 20-160 Å for a bulk crystal, one layer for a monolayer; pixel size 0.06-0.15 Å, drift,
jitter, source size, background and detector noise; dose 5e3-1e5 e/Å²), from validation-split bulk pairs
(never the benchmark's test split) and from the train- and validation-split monolayers (the validation split
holds only two). Each image is put into beam fractions with its detector's gain and dark level, as a
detector scan would, and goes through the shipped denoiser; the true template is aligned, reconstructed and
verified with the pixel size given, as the pipeline does for a candidate. Recorded: the verification's gain
and, for a bulk crystal, the thickness it implies against the true one; for a monolayer, the layers it
implies. Where the other kind of the same composition has a [001] axis (PdTe2 bulk and monolayer), that twin
is verified on the same image as well: what separates them. Bulk cells larger than ``--max-cell-area`` Å² are
skipped (their multislice takes many minutes here). Writes bench/results/absolute_scale.json.
"""
from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np


def validation_images(simulator, n_bulk: int, n_monolayers: int, split: str = "val", max_cell_area: float = 120.0,
                      size: int = 256, seed: int = 11, dose=(5e3, 1e5), skipped: list | None = None):
    """(kind, entry, uvw, dose, ``data.sample.Sample``) for ``n_bulk`` bulk images of ``split``'s pairs and
    ``n_monolayers`` of the train and validation monolayers, drawn as the pipeline benchmark draws its own
    (pixel size 0.06-0.15 Å, dose log-uniform in ``dose``). The same arguments give the same images; the
    dose range changes only the noise. Bulk cells over ``max_cell_area`` Å² are passed over (appended to
    ``skipped``): their multislice takes many minutes here."""
    from data.library import zone_axis_pairs
    from data.noise import ConditionRanges
    from data.sample import draw_sample
    from data.simulate import _described

    bulk_pairs = [(e, za) for e, za in zone_axis_pairs(split) if e.kind == "bulk"]
    mono_pairs = [(e, za) for s in ("train", "val") for e, za in zone_axis_pairs(s) if e.kind == "monolayer"]
    ranges = replace(ConditionRanges(), pixel_size=(0.06, 0.15))
    rng = np.random.default_rng(seed)
    for kind, pairs, n in (("bulk", bulk_pairs, n_bulk), ("monolayer", mono_pairs, n_monolayers)):
        made = 0
        while made < n:
            entry, za = pairs[int(rng.integers(len(pairs)))]
            uvw = tuple(za["uvw"])
            cell = _described(entry.structure, uvw)[0].cell
            if kind == "bulk" and cell[0, 0] * cell[1, 1] > max_cell_area:
                if skipped is not None:
                    skipped.append((entry.id, uvw))
                continue
            d = float(np.exp(rng.uniform(*np.log(dose))))
            yield kind, entry, uvw, d, draw_sample(simulator, entry.structure, uvw, rng, ranges, (size, size), dose=d)
            made += 1


def spread(values) -> dict:
    """Median, σ of ln, and range of positive ``values``."""
    v = np.log(np.asarray(values, float))
    if not len(v):  # a kind left out (--bulk 0)
        return {"n": 0}
    return {"n": int(len(v)), "median": round(float(np.exp(np.median(v))), 4),
            "sd_ln": round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else None,
            "min": round(float(np.exp(v.min())), 4), "max": round(float(np.exp(v.max())), 4)}


def image_arguments(description: str, out: str) -> argparse.ArgumentParser:
    """The command line of a script over ``validation_images`` (``images_from`` reads it)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--bulk", type=int, default=30, help="bulk images")
    ap.add_argument("--monolayers", type=int, default=16, help="monolayer images")
    ap.add_argument("--split", default="val", help="split of the bulk pairs")
    ap.add_argument("--max-cell-area", type=float, default=120.0, help="Å², bulk repeat cells larger are skipped")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default=out)
    return ap


def images_from(args, simulator, **kw):
    """``validation_images`` as ``image_arguments`` asked for them."""
    return validation_images(simulator, args.bulk, args.monolayers, args.split, args.max_cell_area, args.size,
                             args.seed, **kw)


def main(argv=None) -> None:
    args = image_arguments(__doc__.splitlines()[0], "bench/results/absolute_scale.json").parse_args(argv)
    warnings.filterwarnings("ignore")
    from data.library import load_library
    from model.denoiser import Denoiser
    from model.lattice import align_template, fit_lattice
    from model.reconstruct import reconstruct
    from model.verify import loop_simulator, multislice_simulator, specimen_fit, verify

    den, loop, ms = Denoiser.from_checkpoint(), loop_simulator(), multislice_simulator()
    library = load_library()
    by_formula = {}
    for e in library:
        by_formula.setdefault((e.structure.composition.reduced_formula, e.kind), e)
    rows, skipped = [], []

    def truth_fit(entry, uvw, xy, res, px, kind):
        lattice = None
        try:
            lattice = fit_lattice(xy, res.denoised, px)
        except ValueError:
            pass
        al = align_template(xy, entry, uvw, True, pixel_size=px, intensity=res.columns.intensity, lattice=lattice)
        rec = reconstruct(entry, uvw, al)
        ver = verify(rec, res.denoised, px, loop, thickness=80.0)
        return ver, specimen_fit(ver, kind, res.denoised, px)

    for kind, entry, uvw, dose, s in images_from(args, ms, skipped=skipped):
        noise, px = s.conditions.noise, s.conditions.geometry.pixel_size
        fraction = (s.noisy - noise.offset) / (noise.gain * noise.electrons_per_pixel(px))
        res = den(fraction, px)
        row = {"template_id": entry.id, "kind": kind, "zone_axis": list(uvw), "dose": dose, "pixel_size": px,
               "thickness": s.thickness, "source_size": noise.source_size, "background": noise.background}
        try:
            ver, fit = truth_fit(entry, uvw, res.columns.xy, res, px, kind)
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
            rows.append(row | {"error": f"{type(e).__name__}: {e}"[:200]})
            continue
        # gain: the verification's, without the source blur; the fit's scale has it fitted
        row |= {"score": ver.score, "gain": ver.gain, "simulated_thickness": ver.thickness, "fit": fit.to_dict()}
        if kind == "bulk" and fit.scale > 0:  # the constants' own measure, free of BULK_SCALE
            row["thickness_ratio"] = fit.scale * ver.thickness / s.thickness
        twin = by_formula.get((entry.structure.composition.reduced_formula,
                               "bulk" if kind == "monolayer" else "monolayer"))
        if twin is not None and uvw == (0, 0, 1) and any(tuple(z["uvw"]) == (0, 0, 1) for z in twin.zone_axes):
            try:
                tver, tfit = truth_fit(twin, (0, 0, 1), res.columns.xy, res, px, twin.kind)
                row["twin"] = {"template_id": twin.id, "score": tver.score, "fit": tfit.to_dict()}
            except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
                row["twin"] = {"template_id": twin.id, "error": f"{type(e).__name__}: {e}"[:200]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    ok = [r for r in rows if "fit" in r and r["fit"]["scale"] > 0]  # a scale ≤ 0: the truth did not align
    summary = {
        "images": len(rows), "fitted": len(ok), "bulk_cells_skipped": len(skipped),
        "monolayer_scale": spread([r["fit"]["scale"] for r in ok if r["kind"] == "monolayer"]),
        "monolayer_gain_without_blur": spread([r["gain"] for r in ok if r["kind"] == "monolayer" and r["gain"] > 0]),
        "bulk_thickness_ratio": spread([r["thickness_ratio"] for r in ok if r["kind"] == "bulk"]),
        "bulk_thickness_ratio_by_thickness": {
            str(t): spread([r["thickness_ratio"] for r in ok if r["kind"] == "bulk" and round(r["thickness"] / 20) == t // 20])
            for t in (20, 40, 80, 160)
            if any(r["kind"] == "bulk" and round(r["thickness"] / 20) == t // 20 for r in ok)},
        # what model.verify's constants are set from: the medians, and σ pooled over both kinds
        "constants": {"SLAB_SCALE": None, "BULK_SCALE": None, "ABSOLUTE_SIGMA": None},
        "twins": [{"image": r["template_id"], "truth_prior": r["fit"]["prior"], "twin": r["twin"]["template_id"],
                   "twin_prior": r["twin"].get("fit", {}).get("prior")} for r in ok if "twin" in r],
    }
    mono = np.log([r["fit"]["scale"] for r in ok if r["kind"] == "monolayer"])
    bulk = np.log([r["thickness_ratio"] for r in ok if r["kind"] == "bulk"])
    # each kind sets its own scale (``--bulk 0``: the monolayers' alone, after a change to their simulation)
    if len(mono) > 1:
        summary["constants"]["SLAB_SCALE"] = round(float(np.exp(np.median(mono))), 3)
    if len(bulk) > 1:
        summary["constants"]["BULK_SCALE"] = round(float(np.exp(np.median(bulk))), 3)
    if len(mono) > 1 and len(bulk) > 1:
        pooled = np.concatenate([mono - np.median(mono), bulk - np.median(bulk)])
        summary["constants"]["ABSOLUTE_SIGMA"] = round(float(np.sqrt(np.mean(pooled ** 2))), 3)
    print(json.dumps(summary, indent=1))
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
