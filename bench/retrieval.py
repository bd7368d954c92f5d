"""Retrieval benchmark on noisy images, per dose bin, against two baselines.

    python bench/retrieval.py [--per-bin 40] [--size 320] [--seed 7] [--checkpoint PT --index NPZ --out JSON]

Two sets, both made by the data engine (convolution path) under conditions drawn anew: pixel
size 0.06-0.15 Å (training saw 0.1-0.2), random rotation, offset, source size, jitter, drift,
gain, offset, read noise, background; the dose is set per bin.
  (a) ``seen``: training-split materials; the exact (material, zone axis) must come back.
  (b) ``unseen``: test-split materials with their own entry excluded from the index (a material
      the library lacks): the prototype + zone axis must come back.
Each image goes through the shipped denoiser, then the shipped encoders and index, without and
with the element filter (the sample's own elements, as a user would type them), and ranked by
embedding among the templates whose projected lattice fits the one the denoised columns measure
(``ours+lattice``: what the pipeline adds to its top-k). Baselines:
model.baselines (seed system's pair-distance histogram; FFT lattice metric). Writes
bench/results/retrieval.json.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from data.library import zone_axis_pairs
from data.noise import ConditionRanges
from data.sample import draw_sample
from data.simulate import Simulator
from model.baselines import LatticeMetricBaseline, PairDistanceBaseline, template_images
from model.denoiser import Denoiser
from model.lattice import fit_lattice
from model.retrieval import Retriever

DOSES = (1e3, 5e3, 2e4, 1e5)
KEYS = ("pair", "material", "prototype_zone", "zone")


def _commit(meta: dict) -> str | None:
    return meta.get("git_commit") or (meta.get("git") or {}).get("commit")


def hits(cands, truth: dict) -> dict:
    """Top-1 and top-5 hits for each notion of 'right'."""
    def key(c, what):
        return {"pair": (c["template_id"], c["zone_label"]), "material": c["template_id"],
                "prototype_zone": (c["prototype"], c["zone_label"]), "zone": c["zone_label"]}[what]

    out = {}
    for what in KEYS:
        ks = [key(c.to_dict(), what) for c in cands]
        t = key(truth, what)
        out[f"{what}_top1"] = bool(ks[:1] == [t])
        out[f"{what}_top5"] = t in ks[:5]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-bin", type=int, default=40)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="bench/results/retrieval.json")
    ap.add_argument("--checkpoint", default="checkpoints/retrieval.pt", help="retrieval weights (e.g. a run's, before --install)")
    ap.add_argument("--index", default="checkpoints/template_index.npz", help="the template index made with them")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    den = Denoiser.from_checkpoint()
    ret = Retriever.from_checkpoint(args.checkpoint, args.index)
    sim = Simulator(cache_dir=".cache/repeats")
    t0 = time.time()
    templates = template_images(ret.index, sim)
    base = [PairDistanceBaseline(ret.index, templates), LatticeMetricBaseline(ret.index, templates)]
    print(f"baseline templates: {len(templates)} in {time.time() - t0:.0f} s", flush=True)
    ranges = replace(ConditionRanges(), pixel_size=(0.06, 0.15))
    methods = ["ours", "ours+elements", "ours+lattice", "ours+lattice+elements"] + [b.name for b in base] + [b.name + "+elements" for b in base]
    results = {"per_bin": args.per_bin, "size": args.size, "index_entries": len(ret.index),
               "denoiser": _commit(den.meta), "retrieval": _commit(ret.meta), "sets": {}}
    for set_name, split in (("seen", "train"), ("unseen", "test")):
        pairs = zone_axis_pairs(split)
        bins = {}
        for b, dose in enumerate(DOSES):
            rows = {m: [] for m in methods}
            times = []
            for n in range(args.per_bin):
                rng = np.random.default_rng([args.seed, b, n, 0 if split == "train" else 1])
                entry, za = pairs[int(rng.integers(len(pairs)))]
                sample = draw_sample(sim, entry.structure, za["uvw"], rng, ranges, (args.size, args.size), dose=dose)
                px = sample.conditions.geometry.pixel_size
                truth = {"template_id": entry.id, "zone_label": za["label"], "prototype": entry.prototype}
                exclude = [entry.id] if set_name == "unseen" else None
                t = time.time()
                res = den(sample.noisy, px)
                denoised = res.denoised
                emb = ret.embed_image(denoised, px)
                times.append(time.time() - t)
                rows["ours"].append(hits(ret.index.search(emb, 5, exclude=exclude), truth))
                rows["ours+elements"].append(hits(ret.index.search(emb, 5, entry.elements, exclude), truth))
                try:
                    lat = fit_lattice(res.columns.xy, denoised, px)
                except ValueError:
                    lat = None
                for m, els in (("ours+lattice", None), ("ours+lattice+elements", entry.elements)):
                    c = ret.query(denoised, px, 0, els, exclude, lattice=lat, lattice_k=5) if lat is not None else []
                    seen = {(x.template_id, x.zone_label) for x in c}
                    # fewer than five fit: the embedding's own ranking fills the rest
                    c += [x for x in ret.index.search(emb, 10, els, exclude) if (x.template_id, x.zone_label) not in seen]
                    rows[m].append(hits(c[:5], truth))
                for bl in base:
                    rows[bl.name].append(hits(bl.query(denoised, px, 5, exclude=exclude), truth))
                    rows[bl.name + "+elements"].append(hits(bl.query(denoised, px, 5, entry.elements, exclude), truth))
            bins[f"{dose:.0e}"] = {m: {k: float(np.mean([r[k] for r in v])) for k in v[0]} for m, v in rows.items()}
            bins[f"{dose:.0e}"]["seconds_per_image"] = float(np.mean(times))
            o = bins[f"{dose:.0e}"]
            key = "pair" if set_name == "seen" else "prototype_zone"
            print(f"{set_name} dose {dose:.0e}: " + ", ".join(
                f"{m} {o[m][key + '_top1']:.2f}/{o[m][key + '_top5']:.2f}" for m in methods), flush=True)
        results["sets"][set_name] = bins
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
