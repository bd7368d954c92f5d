"""Relaxation and properties with a universal potential: MatterSim, or CHGNet when MatterSim has no weights.

MatterSim's weights are not in its wheel; it downloads them on first use. Resolution order for
``--potential auto`` (the default):
  1. an explicit checkpoint path (argument / CLI flag),
  2. ``$STEM2STRUCT_MATTERSIM_CHECKPOINT``,
  3. MatterSim's own cache (``~/.local/mattersim/pretrained_models/mattersim-v1.0.0-1M.pth``),
  4. MatterSim's download, with a short timeout,
  5. otherwise CHGNet (its package ships weights), with one loud warning.
``mattersim`` with no weights is an error, never a silent fallback; every result records which
potential ran, its version and checkpoint.
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

MATTERSIM_ENV = "STEM2STRUCT_MATTERSIM_CHECKPOINT"
MATTERSIM_CACHE = Path("~/.local/mattersim/pretrained_models/mattersim-v1.0.0-1M.pth").expanduser()
EV_PER_A3_TO_GPA = 160.21766208


class PotentialError(RuntimeError):
    pass


@dataclass
class PotentialInfo:
    name: str  # "mattersim" | "chgnet"
    version: str
    checkpoint: str
    note: str = ""  # why a fallback happened, or where the weights came from


def _mattersim_weights(checkpoint: str | None, download: bool, timeout: float) -> tuple[Path | None, str]:
    """Path to MatterSim weights following the resolution order, or (None, reason)."""
    explicit = checkpoint or os.environ.get(MATTERSIM_ENV)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            source = "--mattersim-checkpoint" if checkpoint else f"${MATTERSIM_ENV}"
            raise PotentialError(f"MatterSim checkpoint {p} (from {source}) does not exist")
        return p, "explicit checkpoint"
    if MATTERSIM_CACHE.is_file():
        return MATTERSIM_CACHE, "MatterSim cache"
    if not download:
        return None, "no MatterSim weights (download disabled)"
    from mattersim.utils.download_utils import download_checkpoint

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        download_checkpoint(MATTERSIM_CACHE.name, save_folder=str(MATTERSIM_CACHE.parent))
    except Exception as e:  # offline machines: refused, unreachable or timed out
        MATTERSIM_CACHE.unlink(missing_ok=True)  # never leave a partial file that looks like weights
        return None, f"MatterSim weights could not be downloaded ({type(e).__name__})"
    finally:
        socket.setdefaulttimeout(previous)
    return (MATTERSIM_CACHE, "downloaded") if MATTERSIM_CACHE.is_file() else (None, "download produced no file")


def load_potential(choice: str = "auto", checkpoint: str | None = None, device: str = "cpu",
                   download: bool = True, timeout: float = 10.0):
    """(ASE calculator, PotentialInfo) for ``choice`` in auto | mattersim | chgnet."""
    if choice not in ("auto", "mattersim", "chgnet"):
        raise PotentialError(f"unknown potential {choice!r}; choose auto, mattersim or chgnet")
    note = ""
    if choice in ("auto", "mattersim"):
        path, reason = _mattersim_weights(checkpoint, download, timeout)
        if path is not None:
            import mattersim
            from mattersim.forcefield import MatterSimCalculator

            calc = MatterSimCalculator(load_path=str(path), device=device)
            return calc, PotentialInfo("mattersim", mattersim.__version__, str(path), reason)
        if choice == "mattersim":
            raise PotentialError(f"--potential mattersim: {reason}; pass a checkpoint or set ${MATTERSIM_ENV}")
        note = f"fallback: {reason}"
        warnings.warn(f"MatterSim unavailable ({reason}); relaxing with CHGNet instead", stacklevel=2)
    import chgnet
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    model = CHGNet.load(verbose=False)
    calc = CHGNetCalculator(model=model, use_device=device)
    return calc, PotentialInfo("chgnet", chgnet.__version__, f"chgnet {model.version} (bundled)", note)


@dataclass
class RelaxResult:
    structure: Structure
    converged: bool
    steps: int
    max_force: float  # eV/Å
    energy: float  # eV
    energy_per_atom: float
    stress_gpa: list  # 3x3, GPa (ASE sign convention: positive = tensile)
    pressure_gpa: float
    volume: float  # Å^3
    density: float  # g/cm^3
    lattice: dict
    spacegroup_before: str
    spacegroup_after: str
    seconds: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("structure", "extra")}
        return d | self.extra


def _spacegroup(s: Structure) -> str:
    sga = SpacegroupAnalyzer(s, symprec=1e-3)
    return f"{sga.get_space_group_symbol()} ({sga.get_space_group_number()})"


def bulk_modulus(structure: Structure, calculator, strain: float = 0.03, points: int = 7) -> float:
    """Birch-Murnaghan fit (``ase.eos``) of E(V) over ±``strain`` in volume around ``structure``, GPa.
    Fractional coordinates stay fixed, so call it on a relaxed cell."""
    from ase.eos import EquationOfState
    from ase.units import GPa

    atoms = AseAtomsAdaptor.get_atoms(structure)
    cell = atoms.cell.copy()
    volumes, energies = [], []
    for f in np.linspace(1 - strain, 1 + strain, points):
        a = atoms.copy()
        a.set_cell(cell * f ** (1 / 3), scale_atoms=True)
        a.calc = calculator
        volumes.append(a.get_volume())
        energies.append(a.get_potential_energy())
    _, _, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return float(b / GPa)


def relax(structure: Structure, calculator, fmax: float = 0.02, steps: int = 500, optimizer: str = "FIRE",
          monolayer: bool = False, keep_symmetry: bool = True, eos: bool = False,
          fix_cell: bool = False) -> RelaxResult:
    """Positions and cell together, space group kept; monolayers relax their in-plane cell only,
    ``fix_cell`` (isolated molecules in a box) none of it.
    ``eos``: also fit the bulk modulus of the relaxed cell (7 more energies)."""
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE

    t0 = time.perf_counter()
    before = _spacegroup(structure)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calculator
    if keep_symmetry:
        atoms.set_constraint(FixSymmetry(atoms, symprec=1e-3))
    # Voigt order xx, yy, zz, yz, xz, xy: a monolayer's vacuum axis (z) stays fixed
    mask = [True, True, False, False, False, True] if monolayer else None
    filtered = atoms if fix_cell else FrechetCellFilter(atoms, mask=mask)
    opt_cls = {"FIRE": FIRE, "BFGS": BFGS}.get(optimizer.upper())
    if opt_cls is None:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose FIRE or BFGS")
    opt = opt_cls(filtered, logfile=None)
    with warnings.catch_warnings():  # CHGNet converts to pymatgen each step and warns about FixSymmetry
        warnings.filterwarnings("ignore", message="Only FixAtoms and FixCartesian")
        converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False) * EV_PER_A3_TO_GPA
    energy = float(atoms.get_potential_energy())
    atoms.set_constraint()
    relaxed = AseAtomsAdaptor.get_structure(atoms)
    lat = relaxed.lattice
    extra = {"bulk_modulus_gpa": bulk_modulus(relaxed, calculator)} if eos and not monolayer else {}
    return RelaxResult(
        structure=relaxed, converged=converged, steps=int(opt.nsteps),
        max_force=float(np.linalg.norm(forces, axis=1).max()), energy=energy, energy_per_atom=energy / len(atoms),
        stress_gpa=np.round(stress, 4).tolist(), pressure_gpa=float(-np.trace(stress) / 3),
        volume=float(lat.volume), density=float(relaxed.density),
        lattice={k: float(v) for k, v in zip(("a", "b", "c", "alpha", "beta", "gamma"), (*lat.abc, *lat.angles))},
        spacegroup_before=before, spacegroup_after=_spacegroup(relaxed), seconds=time.perf_counter() - t0,
        extra=extra)


# Elemental references for formation energies, computed with the same potential as the compound.
REFERENCE_DIR = Path(__file__).parent / "references"
DIATOMIC = ("H", "N", "O", "F", "Cl", "Br", "I")  # X2 molecules (Br2 and I2 as for Cl2: one convention per group)
BOX = 15.0  # Å, molecule-to-image distance well beyond the potentials' cutoffs (5-6 Å)

# Elements whose ground state ASE's reference_states does not build (or builds as a structure that is
# not the standard state): (space group, lattice (a, b, c, alpha, beta, gamma), [(species, Wyckoff
# representative)], source). Experimental room-temperature structures; relax() refines them.
CRYSTAL_REFERENCES = {
    "C": (194, (2.464, 2.464, 6.711, 90, 90, 120), [(0, 0, 0.25), (1 / 3, 2 / 3, 0.25)], "graphite"),
    "B": (166, (4.908, 4.908, 12.567, 90, 90, 120), [(0.11886, 0.88114, 0.89133), (0.19686, 0.80314, 0.02432)],
          "alpha-rhombohedral B12"),
    "P": (64, (3.3136, 10.478, 4.3763, 90, 90, 90), [(0, 0.10168, 0.08056)], "black phosphorus"),
    "Ga": (64, (4.5192, 7.6586, 4.5258, 90, 90, 90), [(0, 0.1549, 0.0810)], "alpha-Ga"),
    "As": (166, (3.7598, 3.7598, 10.5475, 90, 90, 120), [(0, 0, 0.22712)], "grey arsenic (A7)"),
    "Sb": (166, (4.3084, 4.3084, 11.2740, 90, 90, 120), [(0, 0, 0.23349)], "antimony (A7)"),
    "Bi": (166, (4.5460, 4.5460, 11.8620, 90, 90, 120), [(0, 0, 0.23407)], "bismuth (A7)"),
    "Se": (152, (4.3662, 4.3662, 4.9536, 90, 90, 120), [(0.2254, 0, 1 / 3)], "trigonal Se"),
    "Te": (152, (4.4572, 4.4572, 5.9290, 90, 90, 120), [(0.2636, 0, 1 / 3)], "trigonal Te"),
    "In": (139, (3.2523, 3.2523, 4.9461, 90, 90, 90), [(0, 0, 0)], "tetragonal In"),
    "Hg": (166, (3.4646, 3.4646, 6.7191, 90, 90, 120), [(0, 0, 0)], "rhombohedral alpha-Hg"),
    "U": (63, (2.854, 5.869, 4.955, 90, 90, 90), [(0, 0.1025, 0.25)], "alpha-U"),
    "Mn": (217, (8.9125, 8.9125, 8.9125, 90, 90, 90),
           [(0, 0, 0), (0.3179, 0.3179, 0.3179), (0.3571, 0.3571, 0.0347), (0.0896, 0.0896, 0.2819)], "alpha-Mn"),
}


# β-Sn, the standard state (α-Sn is stable only below 13 °C), written out: I4_1/amd's origin choices
# make a Wyckoff representative ambiguous
BETA_SN = ((5.8318, 5.8318, 3.1819, 90, 90, 90), [(0, 0, 0), (0.5, 0.5, 0.5), (0, 0.5, 0.25), (0.5, 0, 0.75)])
BOND = {"Br": 2.281, "I": 2.666}  # Å, gas-phase X2 bonds for molecules ASE's g2 set lacks


def _s8_crown():
    """An S8 crown (D4d): bonds 2.06 Å, S-S-S 108°, alternating ±h about the ring's plane."""
    from ase import Atoms

    d, theta = 2.06, np.radians(108.0)
    r = d * np.sqrt(2 - 2 * np.cos(theta)) / np.sqrt(2)  # same-height neighbours sit 90° apart
    h = 0.5 * np.sqrt(d ** 2 - (2 * r * np.sin(np.pi / 8)) ** 2)
    k = np.arange(8)
    pos = np.stack([r * np.cos(k * np.pi / 4), r * np.sin(k * np.pi / 4), np.where(k % 2, h, -h)], 1)
    return Atoms("S8", positions=pos)


def reference_structure(element: str) -> tuple[Structure, bool]:
    """(standard-state structure, is_molecule); KeyError if we have none for ``element``."""
    from ase.build import bulk, molecule
    from ase.data import atomic_numbers, reference_states
    from pymatgen.core import Lattice

    from ase import Atoms

    if element in CRYSTAL_REFERENCES:
        sg, lat, sites, _ = CRYSTAL_REFERENCES[element]
        return Structure.from_spacegroup(sg, Lattice.from_parameters(*lat), [element] * len(sites), sites), False
    if element == "Sn":
        return Structure(Lattice.from_parameters(*BETA_SN[0]), ["Sn"] * 4, BETA_SN[1]), False
    if element in DIATOMIC or element == "S":
        # orthorhombic sulfur packs S8 crowns; the crown alone omits their weak (van der Waals) binding
        if element == "S":
            atoms = _s8_crown()
        elif element in BOND:
            atoms = Atoms(f"{element}2", positions=[[0, 0, 0], [0, 0, BOND[element]]])
        else:
            atoms = molecule(f"{element}2")
        atoms.set_cell([BOX, BOX, BOX])
        atoms.center()
        atoms.pbc = True
        return AseAtomsAdaptor.get_structure(atoms), True
    state = reference_states[atomic_numbers[element]]
    if not state or state.get("symmetry") not in ("fcc", "bcc", "hcp", "diamond"):
        raise KeyError(f"no simple reference structure for {element}")
    try:
        return AseAtomsAdaptor.get_structure(bulk(element)), False
    except ValueError as e:  # ASE lacks a parameter (e.g. c/a) for this element
        raise KeyError(f"{element}: {e}") from None


def compute_references(calculator, info: PotentialInfo, elements=None) -> dict:
    from ase.data import chemical_symbols

    elements = elements or chemical_symbols[1:95]
    table = {"potential": info.name, "version": info.version, "checkpoint": info.checkpoint,
             "command": f"python -m model.relax references --potential {info.name}", "energies": {}, "structures": {}}
    for el in elements:
        try:
            s, is_molecule = reference_structure(el)
        except KeyError:
            continue
        try:
            r = relax(s, calculator, steps=300, optimizer="BFGS", keep_symmetry=False, fix_cell=True) \
                if is_molecule else relax(s, calculator)
        except Exception as e:  # a potential without parameters for an element
            warnings.warn(f"reference {el} failed: {e}")
            continue
        table["energies"][el] = round(r.energy_per_atom, 6)
        table["structures"][el] = "molecule in a box" if is_molecule else r.spacegroup_after
    return table


def load_references(potential: str) -> dict:
    path = REFERENCE_DIR / f"{potential}.json"
    if not path.is_file():
        raise PotentialError(f"no elemental reference table for {potential}; run "
                             f"`python -m model.relax references --potential {potential}`")
    import json

    return json.loads(path.read_text())


def formation_energy_per_atom(structure: Structure, energy_per_atom: float, references: dict) -> float | None:
    """E_f = E/atom − Σ x_i μ_i with μ from the same potential; None when an element has no reference."""
    comp = structure.composition.fractional_composition
    mu = references["energies"]
    if any(str(el) not in mu for el in comp):
        return None
    return float(energy_per_atom - sum(x * mu[str(el)] for el, x in comp.items()))


def main(argv=None) -> int:
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(prog="python -m model.relax", description="elemental reference energies")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("references", help="compute and store the elemental reference table for a potential")
    r.add_argument("--potential", default="chgnet", choices=["chgnet", "mattersim"])
    r.add_argument("--mattersim-checkpoint")
    r.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    try:
        calc, info = load_potential(args.potential, args.mattersim_checkpoint, args.device)
    except PotentialError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = compute_references(calc, info)
    REFERENCE_DIR.mkdir(exist_ok=True)
    out = REFERENCE_DIR / f"{info.name}.json"
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {out}: {len(table['energies'])} elements")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
