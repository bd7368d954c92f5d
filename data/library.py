"""The structure library: measured crystals and monolayers, their zone axes and material splits.

Built once from the tables in ``data/library/`` (``python -m data.library build``) into
``data/library/library.json.gz``, which ships with the repo; everything else reads that file.

    python -m data.library stats --json          # counts, prototypes, splits, leakage
    python -m data.library build [--cif-dir DIR] [--mp-ids mp-149,mp-2858]
    python -m data.library check                 # lattice constants vs independent references
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from data.prototypes import build_bulk, build_monolayer, parse_params, parse_species
from data.zone_axes import describe, select_zone_axes

LIB_DIR = Path(__file__).parent / "library"
LIBRARY_FILE = LIB_DIR / "library.json.gz"
SPLITS_FILE = LIB_DIR / "splits.json"
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
PLAN_VIEW = (0, 0, 1)


@dataclass
class Entry:
    id: str
    formula: str
    reduced_formula: str
    kind: str  # "bulk" | "monolayer"
    prototype: str
    spacegroup: str
    spacegroup_number: int
    provenance: dict
    lattice: dict  # a, b, c, alpha, beta, gamma of the stored (conventional) cell
    cell: list  # 3x3 matrix, Å
    species: list
    frac_coords: list
    zone_axes: list = field(default_factory=list)  # ZoneAxis.to_dict()
    split: str = ""

    @property
    def structure(self) -> Structure:
        return Structure(Lattice(self.cell), self.species, self.frac_coords)

    @property
    def elements(self) -> list[str]:
        return sorted(set(self.species))

    def zone_axis(self, uvw) -> dict:
        for z in self.zone_axes:
            if tuple(z["uvw"]) == tuple(uvw):
                return z
        raise KeyError(f"{self.id} has no zone axis {list(uvw)}")


def _entry_from_structure(structure: Structure, kind: str, prototype: str, provenance: dict,
                          id_suffix: str = "") -> Entry:
    sga = SpacegroupAnalyzer(structure, symprec=1e-3)
    if kind == "bulk":
        structure = sga.get_conventional_standard_structure()
    lat = structure.lattice
    comp = structure.composition
    return Entry(
        id=f"{comp.reduced_formula}-{prototype}{id_suffix}", formula=comp.formula.replace(" ", ""),
        reduced_formula=comp.reduced_formula, kind=kind, prototype=prototype,
        spacegroup=sga.get_space_group_symbol(), spacegroup_number=sga.get_space_group_number(),
        provenance=provenance,
        lattice={k: round(float(v), 5) for k, v in zip(("a", "b", "c", "alpha", "beta", "gamma"),
                                                         (*lat.abc, *lat.angles))},
        cell=np.round(lat.matrix, 6).tolist(), species=[str(s.specie) for s in structure],
        frac_coords=np.round(structure.frac_coords % 1.0, 6).tolist())


def read_bulk_table(path: Path = LIB_DIR / "bulk_materials.csv") -> list[Entry]:
    out = []
    with open(path) as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            try:
                s = build_bulk(row["prototype"], parse_species(row["species"]), float(row["a"]),
                               float(row["c"]) if row["c"] else None, parse_params(row["params"]))
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path.name}:{n}: {e}") from None
            prov = {"source": "measured lattice parameters on a Wyckoff prototype", "ref": row["ref"],
                    "table": path.name}
            out.append(_entry_from_structure(s, "bulk", row["prototype"], prov))
    return out


def read_monolayer_table(path: Path = LIB_DIR / "monolayers.csv") -> list[Entry]:
    out = []
    with open(path) as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            species = parse_species(row["species"])
            ref = row["ref"]
            mm = 0.0
            for token in ref.split(";"):
                if token.startswith("mm="):
                    mm = float(token[3:])
            try:
                s = build_monolayer(row["prototype"], species, float(row["a"]), float(row["thickness"] or 0), mm)
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path.name}:{n}: {e}") from None
            prov = {"source": "bulk in-plane lattice parameter, one layer with vacuum", "ref": ref,
                    "table": path.name}
            out.append(_entry_from_structure(s, "monolayer", row["prototype"], prov, "-1L"))
    return out


def read_cif_dir(path: Path) -> list[Entry]:
    """Users' own crystals: every ``*.cif`` in a folder becomes a bulk entry."""
    out = []
    for cif in sorted(Path(path).glob("*.cif")):
        s = Structure.from_file(cif)
        sg = SpacegroupAnalyzer(s, symprec=1e-3).get_space_group_number()
        out.append(_entry_from_structure(s, "bulk", f"user-sg{sg}", {"source": "user CIF", "ref": cif.name}))
    return out


def read_materials_project(ids: list[str]) -> list[Entry]:
    """Materials Project structures by id; needs ``MP_API_KEY`` and network (not available offline)."""
    key = os.environ.get("MP_API_KEY")
    if not key:
        raise RuntimeError("MP_API_KEY is not set: Materials Project entries need an API key")
    from mp_api.client import MPRester  # optional dependency: pip install '.[mp]'

    out = []
    with MPRester(key) as mpr:
        for doc in mpr.materials.summary.search(material_ids=ids, fields=["material_id", "structure", "symmetry"]):
            sg = doc.symmetry.number
            out.append(_entry_from_structure(doc.structure, "bulk", f"mp-sg{sg}",
                                             {"source": "Materials Project", "ref": str(doc.material_id)}))
    return out


def matcher_for(kind: str) -> StructureMatcher:
    """Default tolerances for bulk; tighter for monolayers, whose vacuum inflates the volume that
    StructureMatcher normalises its site tolerance by (1T and 2H MoS2 would otherwise match)."""
    return StructureMatcher() if kind == "bulk" else StructureMatcher(ltol=0.1, stol=0.1, angle_tol=2)


def deduplicate(entries: list[Entry]) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Drop entries that ``StructureMatcher`` finds equal to an earlier one of the same composition."""
    kept: list[Entry] = []
    dropped = []
    by_comp: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        group = by_comp[(e.reduced_formula, e.kind)]
        twin = next((k for k in group if matcher_for(e.kind).fit(k.structure, e.structure)), None)
        if twin is not None:
            dropped.append((e.id, twin.id))
            continue
        if any(k.id == e.id for k in group):  # same formula+prototype but a different structure
            e.id = f"{e.id}-{len(group)}"
        group.append(e)
        kept.append(e)
    return kept, dropped


def split_of(reduced_formula: str, seed: int = 0) -> str:
    """Material split by reduced formula, so a composition never sits in two splits (bulk,
    monolayer and every polymorph of it travel together)."""
    h = int(hashlib.sha256(f"{seed}:{reduced_formula}".encode()).hexdigest()[:12], 16) / 16 ** 12
    edge = 0.0
    for name, frac in SPLIT_FRACTIONS.items():
        edge += frac
        if h < edge:
            return name
    return "test"


def build(cif_dir: Path | None = None, mp_ids: list[str] | None = None, progress: bool = True) -> dict:
    from tqdm import tqdm

    entries = read_bulk_table() + read_monolayer_table()
    if cif_dir:
        entries += read_cif_dir(cif_dir)
    if mp_ids:
        entries += read_materials_project(mp_ids)
    entries, dropped = deduplicate(entries)
    kept, no_axes = [], []
    for e in tqdm(entries, desc="zone axes", disable=not progress):
        if e.kind == "monolayer":
            axes = [describe(e.structure, PLAN_VIEW)[0]]
        else:
            axes = select_zone_axes(e.structure)
        if e.kind == "bulk" and len(axes) < 3:
            no_axes.append(e.id)
            continue
        e.zone_axes = [z.to_dict() for z in axes]
        e.split = split_of(e.reduced_formula)
        kept.append(e)
    lib = {"version": 1, "entries": [asdict(e) for e in kept],
           "dropped_duplicates": dropped, "dropped_without_three_zone_axes": no_axes}
    LIB_DIR.mkdir(exist_ok=True)
    with gzip.open(LIBRARY_FILE, "wt") as fh:
        json.dump(lib, fh, separators=(",", ":"))
    splits = {s: sorted(e.id for e in kept if e.split == s) for s in SPLIT_FRACTIONS}
    SPLITS_FILE.write_text(json.dumps(splits, indent=1) + "\n")
    return lib


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[Entry, ...]:
    if not Path(path).exists():
        raise FileNotFoundError(f"structure library {path} not found; run `python -m data.library build`")
    with gzip.open(path, "rt") as fh:
        raw = json.load(fh)
    return tuple(Entry(**e) for e in raw["entries"])


def load_library(path: Path | str = LIBRARY_FILE, split: str | None = None, kind: str | None = None) -> list[Entry]:
    entries = _load(str(path))
    return [e for e in entries if (split is None or e.split == split) and (kind is None or e.kind == kind)]


def zone_axis_pairs(split: str | None = None, path: Path | str = LIBRARY_FILE,
                    kind: str | None = None) -> list[tuple[Entry, dict]]:
    """Every (entry, zone axis) of the library, optionally of one split/kind: what images are made of."""
    return [(e, z) for e in load_library(path, split, kind) for z in e.zone_axes]


def get_entry(entry_id: str, path: Path | str = LIBRARY_FILE) -> Entry:
    for e in load_library(path):
        if e.id == entry_id:
            return e
    raise KeyError(f"no library entry {entry_id!r}")


def leakage(entries: list[Entry]) -> int:
    """Compositions (and composition+prototype pairs) that appear in more than one split."""
    by_formula: dict[str, set] = defaultdict(set)
    by_pair: dict[tuple, set] = defaultdict(set)
    for e in entries:
        by_formula[e.reduced_formula].add(e.split)
        by_pair[(e.reduced_formula, e.prototype)].add(e.split)
    return sum(len(s) > 1 for s in by_formula.values()) + sum(len(s) > 1 for s in by_pair.values())


def stats(entries: list[Entry]) -> dict:
    kinds = Counter(e.kind for e in entries)
    return {
        "bulk": kinds.get("bulk", 0), "monolayer": kinds.get("monolayer", 0),
        "prototypes": len({e.prototype for e in entries}),
        "bulk_prototypes": len({e.prototype for e in entries if e.kind == "bulk"}),
        "zone_axes": sum(len(e.zone_axes) for e in entries),
        "splits": {s: sum(e.split == s for e in entries) for s in SPLIT_FRACTIONS},
        "leakage": leakage(entries),
        "per_prototype": dict(sorted(Counter(e.prototype for e in entries).items())),
    }


# Independent references for the lattice check: ASE's element table (Kittel; note its alkali
# metals are 5-78 K values, ~2 % below room temperature) and the two room-temperature
# experimental structures pymatgen ships (its CsCl, Li2O and TiO2 files are not experimental or
# not the polymorph we hold). Neither source was used to build the library.
def reference_lattices() -> list[tuple[str, str, dict[str, float], str]]:
    from ase.data import chemical_symbols, reference_states

    proto = {"fcc": "fcc", "bcc": "bcc", "hcp": "hcp", "diamond": "diamond"}
    refs = []
    for z, r in enumerate(reference_states):
        if r and r.get("symmetry") in proto:
            ref = {"a": r["a"]}
            if r["symmetry"] == "hcp":
                ref["c"] = r["a"] * r["c/a"]
            refs.append((chemical_symbols[z], proto[r["symmetry"]], ref, "ase.data.reference_states"))
    import pymatgen.core

    sdir = Path(pymatgen.core.__file__).parents[1] / "util" / "structures"
    for name, prototype in (("SrTiO3", "perovskite"), ("Si", "diamond")):
        s = Structure.from_file(sdir / f"{name}.json")
        conv = SpacegroupAnalyzer(s).get_conventional_standard_structure()
        ref = {"a": conv.lattice.a} | ({} if abs(conv.lattice.c - conv.lattice.a) < 1e-3 else {"c": conv.lattice.c})
        refs.append((conv.composition.reduced_formula, prototype, ref, f"pymatgen/util/structures/{name}.json"))
    return refs


def check_lattices(entries: list[Entry], tolerance: float = 0.02) -> list[dict]:
    by_key = {(e.reduced_formula, e.prototype): e for e in entries}
    rows = []
    for formula, prototype, ref, source in reference_lattices():
        e = by_key.get((formula, prototype))
        if e is None:
            continue
        for k, v in ref.items():
            err = e.lattice[k] / v - 1
            rows.append({"id": e.id, "param": k, "library": e.lattice[k], "reference": round(v, 4),
                         "rel_error": round(err, 4), "ok": abs(err) <= tolerance, "source": source})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data.library", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stats", help="print library statistics")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    b = sub.add_parser("build", help="rebuild library.json.gz from the tables (+ your CIFs / MP ids)")
    b.add_argument("--cif-dir", type=Path, help="folder of your own CIF files to add")
    b.add_argument("--mp-ids", help="comma-separated Materials Project ids (needs MP_API_KEY and network)")
    c = sub.add_parser("check", help="library lattice constants vs independent experimental references")
    c.add_argument("--tolerance", type=float, default=0.02)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.cmd == "build":
        lib = build(args.cif_dir, args.mp_ids.split(",") if args.mp_ids else None)
        print(json.dumps(stats([Entry(**e) for e in lib["entries"]]), indent=1))
        print(f"dropped {len(lib['dropped_duplicates'])} duplicates, "
              f"{len(lib['dropped_without_three_zone_axes'])} bulk entries without 3 resolvable zone axes: "
              f"{', '.join(lib['dropped_without_three_zone_axes'])}")
        return 0
    try:
        entries = load_library()
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "stats":
        s = stats(entries)
        if args.json:
            print(json.dumps(s))
        else:
            for k, v in s.items():
                print(f"{k:>14}: {v}")
        return 0
    rows = check_lattices(entries, args.tolerance)
    for r in rows:
        print(f"{r['id']:<22} {r['param']}  library {r['library']:.4f}  reference {r['reference']:.4f}  "
              f"{100 * r['rel_error']:+.2f} %  {'ok' if r['ok'] else 'FAIL'}  ({r['source']})")
    n_mat = len({r["id"] for r in rows})
    bad = [r for r in rows if not r["ok"]]
    print(f"{n_mat} materials, {len(rows)} parameters, {len(bad)} outside ±{100 * args.tolerance:.0f} %")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
