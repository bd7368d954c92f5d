"""Whole-pipeline benchmark (STEM2Mat-style tiers) on the library's test split, through infer.py's code path.

    python bench/pipeline.py build [--per-tier 60] [--negatives 20] [--method multislice] [--limit N] [--like PARTS]
                                   [--ids ID,ID,...|@FILE] [--amorphous-method convolution]
    python bench/pipeline.py run [--variant full|no-pixel|top1|elements|seed|multislice|...] [--limit N]
                                 [--ids ID,...|@FILE] [--denoiser PT] [--retrieval PT --index NPZ] [--results DIR]
    python bench/pipeline.py eform [--variant full] [--potential chgnet] [--limit N]
    python bench/pipeline.py report

``build`` simulates the set once (test-split materials only; multislice by default) and writes it as
a ``datasets`` dataset with its ground truth: the structure, the noise-free image and the visible
columns (``datasets/bench-pipeline``). Tiers:

- ``tier1``: bulk, at most two elements, all Z ≤ 30, low noise (dose 3e4-1e5 e/Å²);
- ``tier2``: bulk, two or more elements, moderate noise (5e3-3e4);
- ``tier3``: bulk, two or more elements, not cubic (complex symmetry), low dose (1e3-5e3);
- ``monolayer``: the monolayers, 5e3-1e5;
- ``negative``: detector noise and amorphous Si/C/Ge, 1e3-1e5 (false acceptance).

Every sample has its own zone axis, pixel size (0.06-0.15 Å), in-plane rotation, thickness and noise.
An amorphous negative is a 30 x 30 Å cell with no shorter repeat, which multislice must scan whole (about
12,500 probe positions, each through a 30 x 30 Å potential, against a few hundred through 10 x 10 Å for a
small crystal repeat; one ran 10 CPU minutes here without finishing). ``--amorphous-method convolution``
simulates those alone with the convolution path; each sample records its ``method``.
``run`` sends each image through ``Pipeline.run`` exactly as infer.py does (relaxation off), one JSON
line per sample in ``bench/results/<set>/<variant>.jsonl`` (an accepted sample's reconstruction as CIF
under ``cif``); a rerun resumes. ``eform`` relaxes every accepted crystal's reconstruction and its ground
truth with the same potential (``model.relax``) and scores the formation energy per atom, one line per
sample in ``<variant>.eform.jsonl``, resumable too; each row carries a digest of the CIF it scored, so
rows left from an earlier ``run`` of the variant are neither resumed nor reported. ``report`` writes
``bench/results/<set>.md`` and ``<set>.json`` (``<set>`` = the dataset folder's name): structure-match success (StructureMatcher,
default tolerances), RMSD (``get_rms_dist``), lattice-parameter error, retrieval top-1/top-5 (the
truth's (entry, zone axis) among the candidates), acceptance and false acceptance, the denoiser's column
F1/RMSE and PSNR against the truth columns and the noise-free image, seconds per stage,
and where ``eform`` ran, the formation-energy MAE over matched and over all accepted crystals; its plots
(success rate vs dose per tier, lattice-error histogram per variant) go to ``bench/results/<set>/plots/``.

Variants: ``full`` (infer.py's defaults: pixel size given, closed loop over the top 10 by embedding
and up to 40 more whose lattice fits), ``no-pixel`` (pixel size estimated, by the lattice's shape alone),
``no-pixel-width`` (``no-pixel`` with each candidate's pixel size weighed by how plausible the columns' width
makes it: ``--column-sigma``, ``model.pixel_size``), ``top1`` (no closed loop: the
embedding's first candidate is kept), ``elements`` (the truth's elements as the --elements hint),
``no-denoiser`` (a Gaussian smoothing instead of the learned denoiser), ``no-symmetry`` (the cell
refined as triclinic), ``seed`` (the seed system re-implemented: Otsu + pair-distance histogram
retrieval over simulated templates, every atom on one plane in a P1 cell), ``multislice`` (``full`` with
``--multislice-k 3``: the close contenders re-verified by full multislice), ``multislice-thickness``
(``multislice`` with each contender scored at its best of 20, 40, 80 and 160 Å), ``lattice10`` (``full`` with
10 lattice candidates instead of 40, the default until the benchmark showed the truth's lattice often fits
but ranks beyond the first 10), ``specimen`` (the truth's kind, bulk or monolayer, as the --specimen hint),
``elements-specimen`` (both hints), ``absolute`` (``full`` on an absolute-scale image: the sample's own
detector reading of the whole beam and of none as --beam-counts / --dark-counts, as a detector scan gives them),
``all-columns`` (``full`` with the intensity term over every column of a candidate, faint ones too:
``Options.column_min_weight`` 0), ``tolerance-3`` (the intensity term's tolerance at 3 % instead of 7 %),
``point-source`` (``full`` with the loop rendering a point source, no source blur fitted: ``--point-source``, the
default until 2026-11-27), ``not-in-library`` (``full`` with the truth's own entry excluded from the
candidates: a material the library lacks, which success cannot count; the report gives how many such crystals
are accepted as another material, and how many of those keep the truth's prototype and zone axis),
``saturation`` (``full`` with the loop's HAADF signal levelling off with thickness, ``Options.saturation``,
bench/channelling.py) and ``saturation-thickness`` (``saturation`` with each candidate verified at its best of
20-320 Å, ``Options.thicknesses``).

A monolayer sample is one layer whatever thickness it draws (``data.simulate.is_slab``); until 2026-11-27 it
was that many layers stacked 20 Å apart, and the monolayer tier was simulated again with one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from model.pixel_size import COLUMN_SIGMA

DATA = Path("datasets/bench-pipeline")
RESULTS = Path("bench/results")  # <set name>/<variant>.jsonl, <set name>.md, <set name>.json
TIERS = {"tier1": (3e4, 1e5), "tier2": (5e3, 3e4), "tier3": (1e3, 5e3), "monolayer": (5e3, 1e5),
         "negative": (1e3, 1e5)}
DOSE_BINS = 4  # quantile bins per tier in the success-vs-dose plot
DOSE_BANDS = (1e3, 5e3, 2e4, 1e5)  # success by dose across tiers: the tiers' own ranges overlap
THICKNESS_LADDER = (20.0, 40.0, 80.0, 160.0, 320.0)  # Å, the ``saturation-thickness`` variant's
# Options overrides per variant; "pixel", "elements", "specimen", "absolute", "exclude_truth" and "seed" are
# handled by ``run``
VARIANTS = {"full": {}, "no-pixel": {"pixel": False}, "no-pixel-width": {"pixel": False, "column_sigma": COLUMN_SIGMA},
            "top1": {"top_k": 1, "lattice_k": 0, "coarser_k": 0}, "no-coarser": {"coarser_k": 0},
            "elements": {"elements": True}, "no-denoiser": {"denoise": False}, "no-symmetry": {"symmetry": False},
            "seed": {"seed": True}, "multislice": {"multislice_k": 3}, "lattice10": {"lattice_k": 10},
            "multislice-thickness": {"multislice_k": 3, "multislice_thicknesses": (20.0, 40.0, 80.0, 160.0)},
            "specimen": {"specimen": True}, "elements-specimen": {"elements": True, "specimen": True},
            "absolute": {"absolute": True}, "all-columns": {"column_min_weight": 0.0},
            "tolerance-3": {"intensity_tolerance": 0.03}, "point-source": {"fit_blur": False},
            "not-in-library": {"exclude_truth": True}, "saturation": {"saturation": True},
            "saturation-thickness": {"saturation": True, "thicknesses": THICKNESS_LADDER}}
OPTION_KEYS = ("top_k", "lattice_k", "coarser_k", "denoise", "symmetry", "multislice_k", "multislice_thicknesses",
               "column_min_weight", "column_sigma", "intensity_tolerance", "fit_blur", "saturation", "thicknesses")


def tier_pools(split: str = "test") -> dict[str, list]:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from data.library import zone_axis_pairs

    pools = {t: [] for t in TIERS if t != "negative"}
    cubic = {}
    for entry, za in zone_axis_pairs(split):
        els = entry.structure.composition.elements
        if entry.kind == "monolayer":
            pools["monolayer"].append((entry, za))
            continue
        if len(els) <= 2 and max(e.Z for e in els) <= 30:
            pools["tier1"].append((entry, za))
        if len(els) >= 2:
            pools["tier2"].append((entry, za))
            if entry.id not in cubic:
                cubic[entry.id] = SpacegroupAnalyzer(entry.structure, 0.1).get_crystal_system() == "cubic"
            if not cubic[entry.id]:
                pools["tier3"].append((entry, za))
    return pools


_SIM = {}


def make_sample(args, tier: str, n: int, pools: dict, parts: Path) -> str:
    """Simulate one sample into ``parts/<tier>-<n>.npz`` (skipped when it exists: resumable)."""
    from data.negatives import amorphous_structure, noise_only_sample
    from data.noise import ConditionRanges
    from data.sample import draw_sample
    from data.simulate import SimulationConfig, Simulator

    f = parts / f"{tier}-{n:04d}.npz"
    if f.is_file():
        return f.name
    amorphous = tier == "negative" and n % 2 == 1
    method = (args.amorphous_method or args.method) if amorphous else args.method
    if method not in _SIM:
        if args.workers > 1:  # parallel over samples: no nested thread pools inside each process
            import dask

            dask.config.set(scheduler="synchronous")
        # the cache key leaves out the device, so repeats simulated on a GPU serve a CPU rebuild
        device = args.device if method == "multislice" else "cpu"
        _SIM[method] = Simulator(config=SimulationConfig(method=method, device=device), cache_dir=args.cache)
    sim = _SIM[method]
    ranges = replace(ConditionRanges(), pixel_size=(0.06, 0.15))
    rng = np.random.default_rng([args.seed, list(TIERS).index(tier), n])
    lo, hi = TIERS[tier]
    dose = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    shape = (args.size, args.size)
    meta = {"id": f"{tier}-{n:04d}", "tier": tier, "dose": dose, "method": method}
    clean, columns = np.zeros(shape, np.float32), np.zeros((0, 2), np.float32)
    if tier == "negative":
        if not amorphous:
            img, cond = noise_only_sample(rng, ranges, shape)
            px, kind = float(rng.uniform(*ranges.pixel_size)), "noise"
        else:
            el = ("Si", "C", "Ge")[(n // 2) % 3]
            s = draw_sample(sim, amorphous_structure(rng, el), (0, 0, 1), rng, ranges, shape, dose=dose)
            img, px, kind, clean = s.noisy, s.conditions.geometry.pixel_size, f"amorphous-{el}", s.clean
            cond = s.conditions
        meta.update(kind=kind, template_id="", zone_axis=[0, 0, 0], zone_label="", truth_cif="", thickness=0.0)
    else:
        entry, za = pools[tier][int(rng.integers(len(pools[tier])))]
        s = draw_sample(sim, entry.structure, za["uvw"], rng, ranges, shape, dose=dose)
        img, px, clean, cond = s.noisy, s.conditions.geometry.pixel_size, s.clean, s.conditions
        vis = s.columns.visible
        columns = np.stack([s.columns.x_A[vis], s.columns.y_A[vis]], 1)
        meta.update(kind="crystal", template_id=entry.id, zone_axis=[int(v) for v in za["uvw"]],
                    zone_label=za["label"], truth_cif=entry.structure.to(fmt="cif"), thickness=float(s.thickness))
    meta["pixel_size"] = float(px)
    # what a detector scan would read for the whole beam and for none: the ``absolute`` variant's calibration
    n = cond.noise
    meta |= {"beam_counts": n.gain * n.electrons_per_pixel(cond.geometry.pixel_size) + n.offset,
             "dark_counts": n.offset}
    tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npz")  # builds sharing a parts folder never share a file
    # the clean image and the visible columns (Å, image frame) score the denoiser inside the harness
    np.savez(tmp, image=img.astype(np.float32), clean=np.asarray(clean, np.float32),
             columns=columns.astype(np.float32), meta=json.dumps(meta))
    tmp.replace(f)
    return f.name


def build(args) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    if args.assemble_only and args.simulate_only:  # before anything is written
        raise SystemExit("--assemble-only and --simulate-only exclude each other")
    pools = tier_pools(args.split)
    counts = {**{t: args.per_tier for t in pools}, "negative": args.negatives}
    # round robin over the tiers, so that --limit N is a smaller set of the same make-up
    plan = [(t, n) for n in range(max(counts.values())) for t in counts if n < counts[t]]
    plan = plan[:args.limit] if args.limit else plan
    selections = []  # (flag, the sample ids it keeps)
    if args.like:  # the samples of an earlier build, simulated afresh: same ids, so same draws
        like = {f.name[:-len(".npz")] for f in args.like.glob("*-[0-9][0-9][0-9][0-9].npz")}
        if not like:
            raise SystemExit(f"--like {args.like}: no samples there")
        selections.append((f"--like {args.like}", like))
    if args.ids:
        selections.append(("--ids", args.ids))
    for flag, wanted in selections:
        unknown = wanted - {f"{t}-{n:04d}" for t, n in plan}
        if unknown:
            raise SystemExit(f"{flag}: {', '.join(sorted(unknown))} not in this plan: they lie beyond "
                             "--per-tier/--negatives/--limit")
        plan = [(t, n) for t, n in plan if f"{t}-{n:04d}" in wanted]
    parts = args.out.with_name(args.out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    if not args.assemble_only:
        (parts / "config.json").write_text(json.dumps({k: v for k, v in vars(args).items()
                                                       if k not in ("workers", "assemble_only", "simulate_only",
                                                                    "device", "cache")},
                                                      default=lambda v: sorted(v) if isinstance(v, set) else str(v)))
    desc = f"simulating ({args.method})"
    if args.assemble_only:  # a build cut short (a job's time limit): the set is what was simulated
        plan = [(t, n) for t, n in plan if (parts / f"{t}-{n:04d}.npz").is_file()]
    elif args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            futures = [pool.submit(make_sample, args, t, n, pools, parts) for t, n in plan]
            for fut in tqdm(as_completed(futures), total=len(futures), desc=desc):
                fut.result()
    else:
        for t, n in tqdm(plan, desc=desc):
            make_sample(args, t, n, pools, parts)
    if args.simulate_only:
        return
    from datasets import Array2D, Dataset, Features, Sequence, Value

    features = Features({"id": Value("string"), "tier": Value("string"), "kind": Value("string"),
                         "image": Array2D((args.size, args.size), "float32"), "pixel_size": Value("float32"),
                         "dose": Value("float32"), "method": Value("string"), "template_id": Value("string"),
                         "zone_axis": Sequence(Value("int32")), "zone_label": Value("string"),
                         "truth_cif": Value("string"), "thickness": Value("float32"),
                         "beam_counts": Value("float64"), "dark_counts": Value("float64"),
                         "clean": Array2D((args.size, args.size), "float32"),
                         "columns_x_A": Sequence(Value("float32")), "columns_y_A": Sequence(Value("float32"))})

    def rows():
        for tier, n in plan:
            z = np.load(parts / f"{tier}-{n:04d}.npz")
            if "clean" not in z.files:
                raise SystemExit(f"{parts / f'{tier}-{n:04d}.npz'} predates the clean image and columns in the "
                                 "set; move that parts folder away and build again")
            yield {**json.loads(str(z["meta"])), "image": z["image"], "clean": z["clean"],
                   "columns_x_A": z["columns"][:, 0], "columns_y_A": z["columns"][:, 1]}

    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # a cache of its own each time: `datasets` keys a generator's cache by its code and arguments, not by the
    # parts it reads, and handed back the previous set's monolayers after they were simulated again
    with tempfile.TemporaryDirectory(dir=args.out.parent) as cache:
        Dataset.from_generator(rows, features=features, cache_dir=cache).save_to_disk(str(tmp))
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"wrote {args.out}: {len(plan)} samples")


def seed_structure(template_id: str, uvw):
    """The seed system's output: the template's cell along the beam, every atom on one plane (z = 3 Å), P1."""
    from pymatgen.core import Lattice, Structure

    from data.library import get_entry
    from data.zone_axes import oriented_cell

    atoms = oriented_cell(get_entry(template_id).structure, uvw)
    pos = atoms.get_positions()
    pos[:, 2] = 3.0
    return Structure(Lattice(atoms.cell[:]), atoms.get_chemical_symbols(), pos, coords_are_cartesian=True)


def run_seed(image, pixel_size: float, baseline, timings: dict) -> tuple[bool, object, list[dict]]:
    """The seed system re-implemented from its description: Otsu + connected components → pair-distance
    histogram nearest neighbour over simulated templates → flat P1 cell, cell fixed. No refusal."""
    t = time.perf_counter()
    cands = baseline.query(image, pixel_size, k=5)
    timings["retrieve"] = round(time.perf_counter() - t, 3)
    top = cands[0]
    timings["total"] = round(time.perf_counter() - t, 3)
    return True, seed_structure(top.template_id, top.zone_axis), [
        {"rank": c.rank, "template_id": c.template_id, "zone_axis": list(c.zone_axis)} for c in cands]


def run(args) -> None:
    from datasets import load_from_disk
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure
    from tqdm import tqdm

    from data.io import LoadedImage
    from data.library import get_entry
    from model.pipeline import Options, Pipeline
    from model.reconstruct import match_truth

    spec = VARIANTS[args.variant]
    ds = load_from_disk(str(args.data)).with_format("numpy")
    n = min(len(ds), args.limit) if args.limit else len(ds)
    out = args.results / args.data.name / f"{args.variant}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {r["id"] for r in read_rows(out)}
    pipe = Pipeline.load(Options(potential="none", **{k: v for k, v in spec.items() if k in OPTION_KEYS}),
                         denoiser=args.denoiser, retrieval=args.retrieval, index=args.index)
    matcher = StructureMatcher()
    baseline = None
    if spec.get("seed"):
        from model.baselines import PairDistanceBaseline, template_images

        baseline = PairDistanceBaseline(pipe.retriever.index, template_images(pipe.retriever.index, pipe.simulator))
    with out.open("a") as fh:
        for i in tqdm(range(n), desc=args.variant):
            row = ds[i]
            if str(row["id"]) in done or (args.ids and str(row["id"]) not in args.ids):
                continue
            truth = Structure.from_str(str(row["truth_cif"]), fmt="cif") if row["kind"] == "crystal" else None
            if spec.get("elements"):  # the truth's elements; a non-crystal has none to give
                pipe.options = replace(pipe.options, elements=None if truth is None else
                                       [str(e) for e in truth.composition.elements])
            if spec.get("specimen"):  # bulk or monolayer, as the truth is; a non-crystal is neither
                pipe.options = replace(pipe.options, specimen=None if truth is None else
                                       get_entry(str(row["template_id"])).kind)
            if spec.get("absolute"):  # the detector's calibration, as a detector scan gives it
                if "beam_counts" not in row:
                    raise SystemExit(f"{args.data} predates beam_counts: rebuild it (bench/pipeline.py build)")
                pipe.options = replace(pipe.options, beam_counts=float(row["beam_counts"]),
                                       dark_counts=float(row["dark_counts"]))
            given = spec.get("pixel", True)
            image = np.asarray(row["image"], np.float32)
            if baseline is not None:
                timings = {}
                accepted, structure, cands = run_seed(image, float(row["pixel_size"]), baseline, timings)
                res = SimpleNamespace(accepted=accepted, reason="seed system: never refuses", reconstructed=structure,
                                      report={"candidates": cands, "timings": timings,
                                              "template": {"id": cands[0]["template_id"]},
                                              "lattice": {"reconstructed": dict(zip("abc", structure.lattice.abc))}})
            else:
                # a material the library lacks: its own entry is never a candidate
                exclude = [str(row["template_id"])] if spec.get("exclude_truth") and truth is not None else None
                res = pipe.run(LoadedImage(image, float(row["pixel_size"]) if given else None,
                                           "flag" if given else "unknown", str(row["id"]), "npy"), exclude=exclude)
            cands = res.report.get("candidates") or []
            key = (str(row["template_id"]), [int(v) for v in row["zone_axis"]])
            # retrieval's own rank of the truth among the candidates (the report lists them by verification)
            rank = next((c["rank"] for c in cands if c["template_id"] == key[0] and list(c["zone_axis"]) == key[1]),
                        None)
            rec = {"id": str(row["id"]), "tier": str(row["tier"]), "kind": str(row["kind"]),
                   "dose": float(row["dose"]), "accepted": bool(res.accepted), "reason": res.reason,
                   "truth": key[0] or None, "truth_zone_axis": key[1] if key[0] else None,
                   "intensity_tolerance": (res.report.get("options") or {}).get("intensity_tolerance"),
                   "fit_blur": (res.report.get("options") or {}).get("fit_blur"),
                   "saturation": (res.report.get("options") or {}).get("saturation"),
                   "template": (res.report.get("template") or {}).get("id"),
                   "truth_rank": rank, "offered": rank is not None, "score": res.report.get("score"),
                   "success": False, "rmsd": None,
                   "lattice_error": None, "timings": res.report.get("timings", {}),
                   "symmetry_kept": (res.report.get("reconstruction") or {}).get("symmetry_kept"),
                   # the multislice re-check's contenders, to study its choice without rerunning it
                   "multislice": [{k: c.get(k) for k in ("template_id", "zone_axis", "lattice_prior",
                                                         "multislice_by_thickness")}
                                  for c in cands if "multislice_score" in c],
                   # every verified candidate's terms: bench/intensity_tolerance.py rescores them offline
                   "candidates": candidate_scores(cands)}
            if res.accepted and truth is not None:
                rec.update(match_truth(res.reconstructed, truth, res.report["lattice"]["reconstructed"], matcher))
                if baseline is None:  # the truth's structure type seen along its zone axis, whatever the species
                    rec["prototype_kept"] = (res.report["template"]["prototype"] == get_entry(key[0]).prototype
                                             and res.report["zone_axis"]["uvw"] == key[1])
            if truth is not None and "clean" in row and getattr(res, "denoised", None) is not None:
                rec.update(denoising_scores(row, res, pipe.options))
            # eform relaxes the reconstruction later, without rerunning the pipeline
            rec["cif"] = res.reconstructed.to(fmt="cif") if res.accepted and res.reconstructed is not None else None
            fh.write(json.dumps(rec) + "\n")
            fh.flush()


def denoising_scores(row, res, options=None) -> dict:
    """The denoiser's share, as bench/denoiser.py scores it: the detected columns against the visible
    truth columns (0.5 Å match radius, border columns left out) and PSNR/SSIM against the clean image
    (put on the beam's scale, as the pipeline put the image, when ``options.beam_counts`` is set)."""
    from dataclasses import asdict

    from model.columns import inside, match_columns
    from model.denoiser import image_quality

    px = float(row["pixel_size"])
    extent = (res.denoised.shape[1] * px, res.denoised.shape[0] * px)
    truth = np.stack([np.asarray(row["columns_x_A"], float), np.asarray(row["columns_y_A"], float)], 1)
    det = match_columns(inside(res.columns_xy_px * px, extent), inside(truth, extent))
    clean = np.asarray(row["clean"], np.float64)
    psnr, ssim = image_quality(clean if options is None else options.beam_fraction(clean), res.denoised)
    return {"columns": {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(det).items()},
            "psnr": psnr, "ssim": ssim}


def loop_candidates(pipe, image: np.ndarray, pixel_size: float):
    """``Pipeline.run``'s stages up to the closed loop's choice, for scripts that study that choice: the denoised
    analysis window, where it sits in the image ((row, col, height, width)), and the candidates it verified."""
    from model.pipeline import analysis_window

    den = pipe.denoiser(np.asarray(image, np.float32), pixel_size)
    i0, j0, h, w = box = analysis_window(den.denoised.shape)
    window = den.denoised[i0:i0 + h, j0:j0 + w]
    verified = [r for r in pipe.candidates(window, den.columns.window(i0, j0, h, w), pixel_size)
                if r.verification is not None]
    return window, box, verified


def candidate_scores(candidates: list[dict]) -> list[dict]:
    """The verified candidates of a report, each with only what scores it (6 significant digits)."""
    terms = ("ncc", "intensity_score", "lattice_prior", "score", "source_sigma")
    return [{"template_id": c["template_id"], "zone_axis": [int(v) for v in c["zone_axis"]],
             **{k: float(f"{float(c[k]):.6g}") for k in terms if c.get(k) is not None}}
            for c in candidates if "intensity_score" in c]


def read_rows(f: Path) -> list[dict]:
    return [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []


def cif_digest(cif: str) -> str:
    """What ties an eform row to the reconstruction it scored: a later ``run`` of the variant writes new
    CIFs under the same ids, and the old rows must then neither be resumed nor reported."""
    return hashlib.sha256(cif.encode()).hexdigest()[:16]


def current_eform(run_rows: list[dict], eform_rows: list[dict]) -> list[dict]:
    """The eform rows that scored the CIFs ``run_rows`` hold now (the last such row per id)."""
    digests = {r["id"]: cif_digest(r["cif"]) for r in run_rows if r.get("cif")}
    return list({r["id"]: r for r in eform_rows if r["id"] in digests and r.get("cif_sha") == digests[r["id"]]}.values())


def relaxed_eform(structure, calculator, references: dict, monolayer: bool, steps: int) -> dict:
    """Formation energy per atom of ``structure`` after relaxation. An element without a reference, or a
    structure the potential cannot handle, gives an ``error`` instead: one sample must not end a long run."""
    from model.relax import formation_energy_per_atom, relax

    missing = sorted({el.symbol for el in structure.composition.element_composition} - set(references["energies"]))
    if missing:  # checked first: no point relaxing what cannot be scored
        return {"eform": None, "converged": None, "error": f"no reference energy for {', '.join(missing)}"}
    try:
        r = relax(structure, calculator, steps=steps, monolayer=monolayer)
    except Exception as e:  # a reconstruction can be unphysical (overlapping or isolated atoms)
        return {"eform": None, "converged": None, "error": f"relaxation failed: {type(e).__name__}: {e}"}
    ef = formation_energy_per_atom(r.structure, r.energy_per_atom, references)
    ok = ef is not None and np.isfinite(ef)
    return {"eform": ef if ok else None, "converged": r.converged, "error": None if ok else f"formation energy {ef}"}


def eform(args) -> None:
    from datasets import load_from_disk
    from pymatgen.core import Structure
    from tqdm import tqdm

    from model.relax import load_potential, load_references

    src = args.results / args.data.name / f"{args.variant}.jsonl"
    out = src.with_suffix(".eform.jsonl")
    accepted = [r for r in read_rows(src) if r["kind"] == "crystal" and r["accepted"]]
    todo = [r for r in accepted if r.get("cif")]
    if len(todo) < len(accepted):  # rows from before run recorded the reconstruction
        print(f"{len(accepted) - len(todo)} accepted crystals have no cif: skipped (rerun `run` to score them)")
    todo = todo[:args.limit] if args.limit else todo
    done = {r["id"] for r in current_eform(todo, read_rows(out))}
    if all(r["id"] in done for r in todo):  # nothing to relax: spare loading the potential
        print(f"{out}: nothing to do")
        return
    ds = load_from_disk(str(args.data)).select_columns(["id", "truth_cif"])
    truth_cif = dict(zip(ds["id"], ds["truth_cif"]))
    calc, info = load_potential(args.potential)
    refs = load_references(info.name)
    truths = {}  # template id -> relaxed truth: each template recurs across zone axes and doses
    with out.open("a") as fh:
        for row in tqdm(todo, desc=f"eform {args.variant}"):
            if row["id"] in done:
                continue
            t = time.perf_counter()
            monolayer = row["tier"] == "monolayer"
            if row["truth"] not in truths:
                truths[row["truth"]] = relaxed_eform(Structure.from_str(truth_cif[row["id"]], fmt="cif"), calc, refs,
                                                     monolayer, args.steps)
            truth = truths[row["truth"]]
            pred = relaxed_eform(Structure.from_str(row["cif"], fmt="cif"), calc, refs, monolayer, args.steps)
            error = "; ".join(f"{k}: {d['error']}" for k, d in (("pred", pred), ("truth", truth)) if d["error"])
            fh.write(json.dumps({
                "id": row["id"], "cif_sha": cif_digest(row["cif"]), "tier": row["tier"], "truth": row["truth"],
                "success": row["success"], "potential": info.name, "eform_pred": pred["eform"], "eform_truth": truth["eform"],
                "abs_error": None if error else abs(pred["eform"] - truth["eform"]),
                "converged_pred": pred["converged"], "converged_truth": truth["converged"],
                "seconds": round(time.perf_counter() - t, 2), "error": error or None}) + "\n")
            fh.flush()


def summarise_eform(rows: list[dict]) -> dict:
    """Formation-energy MAE (eV/atom) over matched and over all accepted crystals; rows with an error
    have no value and are counted apart, so that the MAE's denominator is explicit."""
    def mae(rs):
        errs = [r["abs_error"] for r in rs if r["abs_error"] is not None]
        return float(np.mean(errs)) if errs else None

    return {"eform_mae_success": mae([r for r in rows if r["success"]]), "eform_mae_accepted": mae(rows),
            "eform_n": sum(r["abs_error"] is not None for r in rows),
            "eform_errors": sum(r["abs_error"] is None for r in rows)}


def summarise(rows: list[dict]) -> dict:
    crystals = [r for r in rows if r["kind"] == "crystal"]
    negs = [r for r in rows if r["kind"] != "crystal"]
    out = {"samples": len(rows)}
    if crystals:
        errs = [r["lattice_error"] for r in crystals if r["success"]]
        out.update(
            success_rate=float(np.mean([r["success"] for r in crystals])),
            accepted_rate=float(np.mean([r["accepted"] for r in crystals])),
            retrieval_top1=float(np.mean([r["truth_rank"] == 1 for r in crystals])),
            retrieval_top5=float(np.mean([r["truth_rank"] is not None and r["truth_rank"] <= 5 for r in crystals])),
            # the truth among everything the loop verified (embedding top-k and lattice fits)
            truth_offered=float(np.mean([r["truth_rank"] is not None for r in crystals])),
            symmetry_kept=float(np.mean([bool(r.get("symmetry_kept")) for r in crystals if r["accepted"]]))
            if any(r["accepted"] for r in crystals) else None,
            median_lattice_error=float(np.median(errs)) if errs else None,
            mean_rmsd=float(np.mean([r["rmsd"] for r in crystals if r["rmsd"] is not None])) if errs else None,
            # what the loop's time scales with, free of the machine's load
            candidates_verified=float(np.mean([len(r.get("candidates") or []) for r in crystals])))
    scored = [r for r in crystals if r.get("columns")]
    if scored:
        from model.columns import DetectionScore, pool_scores

        det = pool_scores([DetectionScore(**(r["columns"] | {"rmse": r["columns"]["rmse"] or np.nan})) for r in scored])
        out.update(column_precision=det["precision"], column_recall=det["recall"], column_f1=det["f1"],
                   column_rmse_pm=det["rmse_pm"], psnr=float(np.mean([r["psnr"] for r in scored])),
                   ssim=float(np.mean([r["ssim"] for r in scored])))
    if negs:
        out["false_acceptance"] = float(np.mean([r["accepted"] for r in negs]))
    stages = sorted({k for r in rows for k in r["timings"]})
    out["seconds"] = {k: round(float(np.mean([r["timings"].get(k, 0.0) for r in rows])), 3) for k in stages}
    return out


def outcomes(rows: list[dict], top: int = 15) -> dict:
    """Where the crystals went: matched, never offered to the loop (retrieval), offered but refused,
    or offered and another kept; which wrong templates were kept instead of which truths; success
    by dose band. A wrong template of the truth's own composition (a monolayer taken for its bulk,
    a polymorph) is counted apart: only thickness or stacking tells those apart."""
    from collections import Counter

    crystals = [r for r in rows if r["kind"] == "crystal"]
    wrong = [r for r in crystals if r["accepted"] and not r["success"]]
    formula = lambda tid: (tid or "").split("-")[0]  # noqa: E731 - library ids are <formula>-<prototype>[-1L]
    bands = {}
    for lo, hi in zip(DOSE_BANDS[:-1], DOSE_BANDS[1:]):
        rs = [r for r in crystals if lo <= r["dose"] < hi or (hi == DOSE_BANDS[-1] and r["dose"] == hi)]
        bands[f"{lo:.0e}-{hi:.0e}"] = {"n": len(rs), "success": float(np.mean([r["success"] for r in rs])) if rs else None}
    return {"crystals": len(crystals), "success": sum(r["success"] for r in crystals),
            # a match through another library entry of the same structure counts as a match, not here
            "not_offered": sum(r["truth_rank"] is None and not r["success"] for r in crystals),
            "not_offered_accepted": sum(r["truth_rank"] is None and r["accepted"] for r in crystals),
            "offered_refused": sum(r["truth_rank"] is not None and not r["accepted"] for r in crystals),
            "offered_other_kept": sum(r["truth_rank"] is not None and r["accepted"] and not r["success"]
                                      for r in crystals),
            "wrong_same_composition": sum(formula(r["truth"]) == formula(r["template"]) for r in wrong),
            "confusions": [{"truth": t, "kept": k, "n": n}
                           for (t, k), n in Counter((r["truth"], r["template"]) for r in wrong).most_common(top)],
            "success_by_dose": bands}


def paired_with_full(runs: dict[str, list[dict]], base: str = "full") -> dict[str, dict]:
    """Each variant against ``full`` (or ``base``; its rates keep the ``full_`` keys) on the samples both
    ran: a variant run on part of the set (a slow ablation on a subset) is then compared like for like,
    not against ``full`` on other images."""
    full = {r["id"]: r for r in runs.get(base, [])}
    out = {}
    for v, rows in runs.items():
        shared = [(r, full[r["id"]]) for r in rows if r["id"] in full]
        if v == base or not shared:
            continue
        crystals = [(r, f) for r, f in shared if r["kind"] == "crystal"]
        negs = [(r, f) for r, f in shared if r["kind"] != "crystal"]
        rate = lambda pairs, i, key: float(np.mean([p[i][key] for p in pairs])) if pairs else None  # noqa: E731
        out[v] = {"crystals": len(crystals), "success": rate(crystals, 0, "success"),
                  "full_success": rate(crystals, 1, "success"), "negatives": len(negs),
                  "false_acceptance": rate(negs, 0, "accepted"), "full_false_acceptance": rate(negs, 1, "accepted"),
                  # the crystals only one of the two matched, by id: what the ablation changed
                  "only_variant": sorted(r["id"] for r, f in crystals if r["success"] and not f["success"]),
                  "only_full": sorted(r["id"] for r, f in crystals if f["success"] and not r["success"])}
    return out


def plot(runs: dict[str, list[dict]], out: Path) -> None:
    """success_vs_dose.png (one panel per crystal tier, quantile dose bins) and lattice_error_hist.png
    (successful matches) under ``out``, one line style per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    out.mkdir(parents=True, exist_ok=True)
    # fixed per variant, so a variant looks the same whichever others were run
    styles = dict(zip(VARIANTS, (("-", "o"), ("--", "s"), (":", "^"), ("-.", "v"), ((0, (5, 1, 1, 1)), "D"),
                                 ((0, (1, 1)), "P"), ((0, (3, 1, 1, 1, 1, 1)), "X"), ((0, (5, 2)), "*"),
                                 ((0, (2, 2)), "h"), ((0, (8, 2, 2, 2)), "p"), ((0, (1, 2)), "<"), ((0, (6, 1)), ">"),
                                 ((0, (4, 1, 1, 1, 1, 1)), "d"), ((0, (3, 3)), "8"))))
    tiers = [t for t in TIERS if t != "negative" and any(r["tier"] == t for rows in runs.values() for r in rows)]
    # one dose axis for every panel: the tiers' dose ranges line up, and each shows whole decades
    fig, axes = plt.subplots(1, max(len(tiers), 1), figsize=(3.2 * max(len(tiers), 1), 3.4), sharex=True,
                             sharey=True, squeeze=False)
    for ax, tier in zip(axes[0], tiers):
        for v, rows in runs.items():
            rs = sorted((r for r in rows if r["tier"] == tier), key=lambda r: r["dose"])
            if not rs:
                continue
            # quantile bins: each tier spans its own dose range, too narrow for per-decade bins
            bins = np.array_split(np.arange(len(rs)), min(DOSE_BINS, len(rs)))
            x = [np.exp(np.mean([np.log(rs[i]["dose"]) for i in b])) for b in bins]
            y = [100 * np.mean([rs[i]["success"] for i in b]) for b in bins]
            ls, marker = styles.get(v, ("-", "x"))
            ax.plot(x, y, linestyle=ls, marker=marker, label=v)
        ax.set(xscale="log", title=tier, xlabel="dose (e/Å²)", ylim=(-5, 105))
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0][0].set(ylabel="success (%)", xlim=(min(lo for lo, _ in TIERS.values()) / 1.5,
                                                max(hi for _, hi in TIERS.values()) * 1.5))
    handles = {lab: h for ax in axes[0] for h, lab in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=max(len(handles), 1), fontsize="small")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "success_vs_dose.png", dpi=120)
    plt.close(fig)

    errs = {v: [100 * max(r["lattice_error"], 1e-6) for r in rows if r["success"]] for v, rows in runs.items()}
    fig, ax = plt.subplots(figsize=(5, 3.2))
    every = [e for es in errs.values() for e in es]
    if every:
        bins = np.logspace(np.log10(min(every)), np.log10(max(every)) + 1e-9, 20)
        for v, es in errs.items():
            if es:
                ax.hist(es, bins=bins, histtype="step", linestyle=styles.get(v, ("-",))[0], label=f"{v} ({len(es)})")
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no successful matches", ha="center", transform=ax.transAxes)
    ax.set(xscale="log", xlabel="lattice error |Δ|/x (%)", ylabel="successful matches")
    fig.tight_layout()
    fig.savefig(out / "lattice_error_hist.png", dpi=120)
    plt.close(fig)


def report(args) -> None:
    results, runs = {}, {}
    folder = args.results / args.data.name
    for f in sorted(folder.glob("*.jsonl")):
        if f.name.endswith(".eform.jsonl"):
            continue
        rows = runs[f.stem] = read_rows(f)
        ef_all = read_rows(f.with_suffix(".eform.jsonl"))
        ef = current_eform(rows, ef_all)
        if len(ef) < len(ef_all):
            print(f"{f.stem}: {len(ef_all) - len(ef)} eform rows score an earlier run's CIFs and are left out "
                  f"(rerun `eform --variant {f.stem}`)")
        tiers = sorted({r["tier"] for r in rows})
        results[f.stem] = {"overall": summarise(rows), **{t: summarise([r for r in rows if r["tier"] == t])
                                                          for t in tiers}}
        for t, m in results[f.stem].items():
            scored = [r for r in ef if t == "overall" or r["tier"] == t]
            if scored:
                m.update(summarise_eform(scored))
    if runs:
        plot(runs, folder / "plots")
    parts = args.data.with_name(args.data.name + ".parts") / "config.json"
    info = json.loads(parts.read_text()) if parts.is_file() else {}
    paired = paired_with_full(runs)
    # the columns' width as a prior against the lattice's shape alone, where both ran
    width = paired_with_full({v: runs[v] for v in ("no-pixel", "no-pixel-width") if v in runs},
                             base="no-pixel").get("no-pixel-width")
    fates = {v: outcomes(rows) for v, rows in runs.items()}
    (args.results / f"{args.data.name}.json").write_text(json.dumps({"set": info, "variants": results,
                                                                      "paired_with_full": paired,
                                                                      "no_pixel_width_vs_shape": width,
                                                                      "outcomes": fates}, indent=1) + "\n")
    pct = lambda x: "–" if x is None else f"{100 * x:.0f} %"  # noqa: E731
    err = lambda x: "–" if x is None else f"{100 * x:.2f} %"  # noqa: E731
    mev = lambda x: "–" if x is None else f"{1000 * x:.1f}"  # noqa: E731
    db = lambda x: "–" if x is None else f"{x:.1f}"  # noqa: E731
    cols = lambda m: "–" if m.get("column_f1") is None else f"{m['column_f1']:.3f} / {m['column_rmse_pm']:.1f}"  # noqa: E731
    lines = ["| variant | tier | n | success | accepted | retrieval top-1 / top-5 | truth verified | "
             "space group kept | median lattice err. | false acceptance | "
             "E_form MAE (matched / all accepted), meV/atom (n scored) | column F1 / RMSE (pm) | PSNR (dB) | s/image |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v, by_tier in results.items():
        for t, m in by_tier.items():
            ef = (f"{mev(m['eform_mae_success'])} / {mev(m['eform_mae_accepted'])} ({m['eform_n']})"
                  if "eform_n" in m else "–")
            lines.append(f"| {v} | {t} | {m['samples']} | {pct(m.get('success_rate'))} | {pct(m.get('accepted_rate'))} | "
                         f"{pct(m.get('retrieval_top1'))} / {pct(m.get('retrieval_top5'))} | "
                         f"{pct(m.get('truth_offered'))} | {pct(m.get('symmetry_kept'))} | "
                         f"{err(m.get('median_lattice_error'))} | "
                         f"{pct(m.get('false_acceptance'))} | {ef} | {cols(m)} | {db(m.get('psnr'))} | "
                         f"{m['seconds'].get('total', 0):.1f} |")
    if paired:
        lines += ["", "Each variant against `full` on the samples both ran:", "",
                  "| variant | crystals | success | `full` on them | negatives | false acceptance | `full` on them |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {v} | {p['crystals']} | {pct(p['success'])} | {pct(p['full_success'])} | {p['negatives']} | "
                  f"{pct(p['false_acceptance'])} | {pct(p['full_false_acceptance'])} |" for v, p in paired.items()]
    if width:
        lines += ["", f"`no-pixel-width` against `no-pixel` (the columns' width as a prior against the lattice's shape alone) "
                      f"on the {width['crystals']} crystals and {width['negatives']} negatives both ran: success "
                      f"{pct(width['success'])} against {pct(width['full_success'])} ({len(width['only_variant'])} gained, "
                      f"{len(width['only_full'])} lost), false acceptance {pct(width['false_acceptance'])} against "
                      f"{pct(width['full_false_acceptance'])}."]
    fates = {v: o for v, o in fates.items() if o["crystals"]}
    if fates:
        bands = list(next(iter(fates.values()))["success_by_dose"])
        lines += ["", "Where the crystals went (the truth *offered* = among the candidates the loop verified):", "",
                  "| variant | crystals | matched | truth not offered (of which accepted) | offered, refused | "
                  "offered, another kept | wrong kept of the truth's composition | "
                  + " | ".join(f"success at {b} e/Å² (n)" for b in bands) + " |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(bands)]
        for v, o in fates.items():
            by_dose = " | ".join(f"{pct(d['success'])} ({d['n']})" for d in o["success_by_dose"].values())
            lines.append(f"| {v} | {o['crystals']} | {o['success']} | {o['not_offered']} ({o['not_offered_accepted']}) | "
                         f"{o['offered_refused']} | {o['offered_other_kept']} | {o['wrong_same_composition']} | {by_dose} |")
        for v in ("full", "elements", "specimen", "elements-specimen"):
            if fates.get(v, {}).get("confusions"):
                lines += ["", f"`{v}`: wrong crystals kept most often (truth → kept, samples):", "",
                          ", ".join(f"{c['truth']} → {c['kept']} {c['n']}" for c in fates[v]["confusions"][:10])]
    for v, rows in runs.items():
        if VARIANTS.get(v, {}).get("exclude_truth"):
            cr = [r for r in rows if r["kind"] == "crystal"]
            acc = [r for r in cr if r["accepted"]]
            lines += ["", f"`{v}` (the truth's own entry never a candidate, as for a material the library lacks): "
                      f"{len(acc)} of {len(cr)} crystals accepted as another material ({pct(len(acc) / max(len(cr), 1))}), "
                      f"{sum(bool(r.get('prototype_kept')) for r in acc)} of them with the truth's prototype and zone "
                      f"axis; {len(cr) - len(acc)} refused."]
    (args.results / f"{args.data.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def ids_arg(text: str) -> set[str]:
    """``A,B,...`` or ``@FILE`` with one id per line."""
    if text.startswith("@"):
        return {t.strip() for t in Path(text[1:]).read_text().split() if t.strip()}
    return {t for t in text.split(",") if t}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="simulate the benchmark set once")
    b.add_argument("--per-tier", type=int, default=60)
    b.add_argument("--negatives", type=int, default=20)
    b.add_argument("--method", default="multislice", choices=["multislice", "convolution"])
    b.add_argument("--split", default="test", choices=["test", "val"],
                   help="the library split the crystals come from: test (the benchmark) or val (a multislice set to "
                        "choose settings and calibrate on: bench/calibrate.py --data)")
    b.add_argument("--amorphous-method", choices=["multislice", "convolution"],
                   help="the amorphous negatives' simulation (default: --method). Their 30 x 30 Å cell has no "
                        "short repeat, so multislice scans all of it")
    b.add_argument("--size", type=int, default=256)
    b.add_argument("--seed", type=int, default=8)
    b.add_argument("--limit", type=int)
    b.add_argument("--workers", type=int, default=1, help="processes simulating samples in parallel")
    b.add_argument("--assemble-only", action="store_true",
                   help="write the dataset from the samples simulated so far, simulating nothing")
    b.add_argument("--simulate-only", action="store_true",
                   help="simulate the samples (parts and repeat cache) without writing the dataset: for a machine "
                        "that lacks `datasets`, or whose cache is carried back to rebuild the set elsewhere")
    b.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                   help="where abTEM runs multislice (gpu: CuPy; the repeat cache serves either)")
    b.add_argument("--cache", type=Path, default=Path(".cache/repeats"), help="the simulator's repeat cache")
    b.add_argument("--like", type=Path, metavar="PARTS",
                   help="only the samples found in PARTS, an earlier build's parts folder (to redo a set with "
                        "new fields or code: same ids and seeds, so same materials and conditions)")
    b.add_argument("--ids", type=ids_arg, metavar="ID,ID,...|@FILE",
                   help="only these samples (ids as tier1-0003; @FILE: one per line)")
    b.add_argument("--out", type=Path, default=DATA)
    r = sub.add_parser("run", help="run one variant over the set (resumable)")
    r.add_argument("--variant", default="full", choices=list(VARIANTS))
    r.add_argument("--limit", type=int)
    r.add_argument("--ids", type=ids_arg, metavar="ID,ID,...|@FILE",
                   help="only these samples (e.g. to diagnose a few; the rest stay to do)")
    r.add_argument("--denoiser", help="denoiser weights (default: checkpoints/denoiser.pt; e.g. a run's, before --install)")
    r.add_argument("--retrieval", help="retrieval weights (default: checkpoints/retrieval.pt; e.g. a run's, before --install)")
    r.add_argument("--index", help="the template index made with them (default: checkpoints/template_index.npz)")
    r.add_argument("--data", type=Path, default=DATA)
    r.add_argument("--results", type=Path, default=RESULTS)
    e = sub.add_parser("eform", help="formation-energy error of one variant's accepted crystals (resumable)")
    e.add_argument("--variant", default="full", choices=list(VARIANTS))
    e.add_argument("--potential", default="chgnet", choices=["auto", "mattersim", "chgnet"],
                   help="needs a reference table in model/references (chgnet ships one)")
    e.add_argument("--steps", type=int, default=300, help="optimiser step cap per relaxation")
    e.add_argument("--limit", type=int, help="only the first N accepted crystals")
    e.add_argument("--data", type=Path, default=DATA)
    e.add_argument("--results", type=Path, default=RESULTS)
    p = sub.add_parser("report", help="tables and plots from every variant run so far")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    t0 = time.time()
    {"build": build, "run": run, "eform": eform, "report": report}[args.cmd](args)
    print(f"{args.cmd}: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
