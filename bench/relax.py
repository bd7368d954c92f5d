"""Relaxation benchmark for one potential: lattice constants, formation energies, timings.

    python bench/relax.py [--potential chgnet]

- Lattice constants: library crystals (measured room-temperature lattices, data/library) relaxed from
  their experimental cell; relative error of a (and c).
- Formation energies: our E_f (same-potential elemental references, model/references/) against the
  experimental formation enthalpies pymatgen ships (pymatgen/analysis/compatibility/exp_compounds.json.gz,
  eV per formula unit; Kubaschewski / NIST-JANAF compilations as curated by pymatgen).
- Bulk moduli (Birch-Murnaghan, ase.eos) of five crystals against experiment.
- Time per relaxation of 2, 20 and 100-atom cells from a 2 %-expanded start, on this machine.
Writes bench/results/relax_<potential>.json.
"""
from __future__ import annotations

import argparse
import gzip
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pymatgen.core
from pymatgen.core import Composition

from data.library import get_entry
from model.relax import formation_energy_per_atom, load_potential, load_references, relax

LATTICE = ["Si-diamond", "Ge-diamond", "Cu-fcc", "Al-fcc", "Ni-fcc", "Ag-fcc", "Au-fcc", "Fe-bcc", "W-bcc",
           "Mo-bcc", "NaCl-rocksalt", "MgO-rocksalt", "LiF-rocksalt", "GaAs-zincblende", "SrTiO3-perovskite",
           "TiO2-rutile", "CaF2-fluorite", "GaN-wurtzite", "TiN-rocksalt", "Mg-hcp"]
BULK_MODULUS = {"Si-diamond": 98.0, "Cu-fcc": 140.0, "MgO-rocksalt": 160.0, "NaCl-rocksalt": 24.0,
                "W-bcc": 310.0}  # GPa, room-temperature experimental values (Kittel; CRC)
FORMATION = ["NaCl-rocksalt", "MgO-rocksalt", "LiF-rocksalt", "KCl-rocksalt", "CaO-rocksalt", "SrO-rocksalt",
             "BaO-rocksalt", "NaF-rocksalt", "KF-rocksalt", "LiCl-rocksalt", "CsCl-cscl", "TiO2-rutile",
             "CaF2-fluorite", "SrF2-fluorite", "BaF2-fluorite", "MgF2-rutile", "SrTiO3-perovskite",
             "TiN-rocksalt", "ZrN-rocksalt", "TiC-rocksalt", "ZrC-rocksalt", "NbC-rocksalt", "Al2O3-corundum",
             "ZnO-wurtzite", "CeO2-fluorite", "ThO2-fluorite", "Li2O-antifluorite", "NiO-rocksalt"]
# compounds of elements whose references are not simple metals or diatomics (S, Se, Te, P, As, Sb, B, Ga,
# In, Sn, Br, I, Mn, U, Hg, and C as graphite)
FORMATION_COMPLEX = ["ZnS-zincblende", "PbS-rocksalt", "ZnSe-zincblende", "CdTe-zincblende", "GaAs-zincblende",
             "InSb-zincblende", "GaP-zincblende", "InP-zincblende", "BN-zincblende", "SiC-zincblende",
             "TiB2-alb2", "MgB2-alb2", "SnO2-rutile", "KI-rocksalt", "NaBr-rocksalt", "MnO-rocksalt",
             "MnF2-rutile", "UO2-fluorite", "HgS-zincblende", "WC-wc", "FeS2-pyrite", "MoS2-mos2_2h",
             "SnSe2-cdi2", "NiSb-nias"]


def experimental_enthalpies() -> dict[str, float]:
    path = Path(pymatgen.core.__file__).parents[1] / "analysis" / "compatibility" / "exp_compounds.json.gz"
    with gzip.open(path, "rt") as fh:
        rows = json.load(fh)
    out = {}
    for r in rows:
        comp = Composition(r["formula"])
        out.setdefault(comp.reduced_formula, r["exp energy"] / comp.num_atoms)  # eV/atom
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--potential", default="chgnet")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    calc, info = load_potential(args.potential)
    refs = load_references(info.name)
    res = {"potential": info.__dict__, "lattice": [], "formation": [], "timing": []}
    for eid in LATTICE:
        e = get_entry(eid)
        r = relax(e.structure, calc)
        row = {"id": eid, "converged": r.converged}
        for k in ("a", "c") if e.lattice["c"] != e.lattice["a"] else ("a",):
            row[k] = {"relaxed": round(r.lattice[k], 4), "experiment": e.lattice[k],
                      "rel_error": round(r.lattice[k] / e.lattice[k] - 1, 4)}
        res["lattice"].append(row)
        print(json.dumps(row))
    res["bulk_modulus"] = []
    for eid, b_exp in BULK_MODULUS.items():
        r = relax(get_entry(eid).structure, calc, eos=True)
        row = {"id": eid, "bulk_modulus_gpa": round(r.extra["bulk_modulus_gpa"], 1), "experiment_gpa": b_exp}
        res["bulk_modulus"].append(row)
        print(json.dumps(row))
    exp = experimental_enthalpies()
    for eid in FORMATION + FORMATION_COMPLEX:
        e = get_entry(eid)
        if e.reduced_formula not in exp:
            continue
        r = relax(e.structure, calc)
        ef = formation_energy_per_atom(r.structure, r.energy_per_atom, refs)
        if ef is None:
            continue
        row = {"id": eid, "ef_potential": round(ef, 4), "ef_experiment": round(exp[e.reduced_formula], 4),
               "error": round(ef - exp[e.reduced_formula], 4)}
        res["formation"].append(row)
        print(json.dumps(row))
    sto = get_entry("SrTiO3-perovskite").structure
    for n_atoms, cell in ((2, None), (20, [1, 2, 2]), (100, [5, 2, 2])):
        s = get_entry("CsCl-cscl").structure if cell is None else sto * cell
        s = s.copy()
        s.scale_lattice(s.volume * 1.02 ** 3)
        t = time.perf_counter()
        r = relax(s, calc)
        res["timing"].append({"atoms": len(s), "seconds": round(time.perf_counter() - t, 2), "steps": r.steps,
                              "converged": r.converged})
        print(json.dumps(res["timing"][-1]))
    errs = [abs(v["rel_error"]) for row in res["lattice"] for k, v in row.items() if k in ("a", "c")]
    res["summary"] = {
        "lattice_materials": len(res["lattice"]), "lattice_mean_abs_rel_error": round(float(np.mean(errs)), 4),
        "lattice_max_abs_rel_error": round(float(np.max(errs)), 4),
        "formation_compounds": len(res["formation"]),
        "formation_mae_ev_per_atom": round(float(np.mean([abs(r["error"]) for r in res["formation"]])), 4),
        "formation_mae_complex_references": round(float(np.mean(
            [abs(r["error"]) for r in res["formation"] if r["id"] in FORMATION_COMPLEX])), 4)}
    print(json.dumps(res["summary"]))
    out = Path(f"bench/results/relax_{info.name}.json")
    out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
