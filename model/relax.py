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
DIATOMIC = ("H", "N", "O", "F", "Cl")  # gases at standard conditions: an isolated molecule in a box
BOX = 15.0  # Å, molecule-to-image distance well beyond the potentials' cutoffs (5-6 Å)


def reference_structure(element: str) -> tuple[Structure, bool]:
    """(ground-state structure, is_molecule) from ASE's reference states; KeyError if we have none."""
    from ase.build import bulk, molecule
    from ase.data import atomic_numbers, reference_states

    if element in DIATOMIC:
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
