"""Which crystals the measured lattice misses, and whether a lattice of 2, 3 or 4 times its cell brings them.

    python bench/lattice_index.py [--data datasets/bench-exact97] [--ids A,B|@FILE]

For each crystal of a set built by ``bench/pipeline.py build``, the pipeline's own stages denoise the image
and fit its lattices (``model.lattice.image_lattices``), as ``infer.py`` does. The first lattice is then
compared with every template's (``model.retrieval.fitting_lattices``, 5 %) as measured, and as each lattice of
index 2, 3 and 4 in it (``model.retrieval.coarser_mismatch``; the pipeline tries those of index 2). Where
the truth fits only a coarser one, the sample records its rank among that index's fits by closeness (what
``Retriever.query(coarser_k=)`` takes) and by embedding score, and how many templates fit. Writes
bench/results/lattice_index_<set>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

INDICES = (2, 3, 4)


def main(argv=None) -> None:
    from pipeline import ids_arg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("datasets/bench-exact97"))
    ap.add_argument("--ids", type=ids_arg, help="only these samples (ids; @FILE: one per line)")
    ap.add_argument("--out", type=Path, help="default: bench/results/lattice_index_<set>.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from datasets import load_from_disk

    from model.lattice import image_lattices, lattice_metric
    from model.pipeline import Options, Pipeline
    from model.retrieval import LATTICE_TOL, coarser_mismatch, fitting_lattices, pair_key

    t0 = time.time()
    ds = load_from_disk(str(args.data)).with_format("numpy")
    pipe = Pipeline.load(Options(potential="none"))
    index = pipe.retriever.index
    table = index.lattice_table()
    keys = [pair_key(r["template_id"], r["zone_axis"]) for r in index.records]
    rows = []
    for i in range(len(ds)):
        row = ds[i]
        if row["kind"] != "crystal" or (args.ids and str(row["id"]) not in args.ids):
            continue
        image, px = np.asarray(row["image"], np.float32), float(row["pixel_size"])
        den = pipe.denoiser(image, pixel_size=px)
        lattices = image_lattices(den.columns.xy, den.denoised, px, image)
        t = keys.index(pair_key(str(row["template_id"]), [int(v) for v in row["zone_axis"]]))
        rec = {"id": str(row["id"]), "tier": str(row["tier"]), "truth": keys[t], "lattice": None}
        if lattices:
            B = lattices[0].vectors
            scores = index.embeddings @ pipe.retriever.embed_image(den.denoised, px)
            measured = fitting_lattices(lattice_metric(B), table, True)[0]
            rec |= {"lattice": [round(float(v), 4) for v in lattice_metric(B)], "source": lattices[0].source,
                    "truth_lattices": np.round(table[t], 4).tolist(),
                    "truth_fits": bool(measured[t] <= LATTICE_TOL), "fits": int((measured <= LATTICE_TOL).sum())}
            for n in INDICES:
                mis = coarser_mismatch(B, table, n)
                fits = (mis <= LATTICE_TOL) & (measured > LATTICE_TOL)
                rec[f"index{n}"] = {"fits": int(fits.sum()), "truth_fits": bool(fits[t])}
                if fits[t]:
                    rec[f"index{n}"] |= {"rank_by_closeness": int((mis[fits] < mis[t]).sum()) + 1,
                                         "rank_by_embedding": int((scores[fits] > scores[t]).sum()) + 1}
        rows.append(rec)
        print(json.dumps(rec), flush=True)
    missed = [r for r in rows if not r.get("truth_fits")]
    summary = {"data": str(args.data), "crystals": len(rows), "truth_fits_measured": len(rows) - len(missed),
               "no_lattice": sum(r["lattice"] is None for r in rows),
               **{f"truth_fits_only_index{n}": sum(bool(r.get(f"index{n}", {}).get("truth_fits")) for r in missed)
                  for n in INDICES},
               "median_fits": {f"index{n}": float(np.median([r[f"index{n}"]["fits"] for r in rows if r["lattice"]]))
                               for n in INDICES},
               "seconds": round(time.time() - t0, 1)}
    out = args.out or Path(f"bench/results/lattice_index_{args.data.name}.json")
    out.write_text(json.dumps({"summary": summary, "samples": rows}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
