"""An isolated atom's HAADF cross-section, by multislice: what one atom of a monolayer adds to the image.

    python -m data.cross_sections   # rewrites data/library/cross_sections.json (every element of the library)

The convolution path's per-atom object (a power of the atom's blurred projected potential) was fitted on
bulk columns at 40 Å, where channelling sets the contrast. A monolayer's columns hold one atom, or two
stacked a few Å apart, and no single power serves them (bench/results/convolution_validation_monolayers.json:
the best exponent runs from 1.2 to 3.0 from crystal to crystal). So for a slab each atom's object keeps its
shape and is scaled to integrate to that element's cross-section: the HAADF signal of the atom alone in
vacuum, summed over the scan (fraction of the beam × Å²), by multislice with the same microscope.
The table holds the default microscope's; any other is computed on first use (a few seconds per element)
and kept for the process.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

TABLE = Path(__file__).parent / "library" / "cross_sections.json"
BOX = 6.0  # Å: the atom's cell; the potential is tiled, so its periodic images sit this far away
_MEMO: dict[tuple, float] = {}


def _setting(microscope, sampling: float, slice_thickness: float) -> dict:
    return {"microscope": asdict(microscope), "sampling": round(float(sampling), 6),
            "slice_thickness": float(slice_thickness), "box": BOX}


def isolated_atom(microscope, z: int, sampling: float, slice_thickness: float) -> float:
    """Multislice HAADF of one atom of element ``z`` in vacuum, summed over the scan (fraction × Å²)."""
    from ase import Atoms

    from data.simulate import SimulationConfig, Simulator

    sim = Simulator(microscope, SimulationConfig(method="multislice", sampling=sampling,
                                                 slice_thickness=slice_thickness))
    # a slab: one layer whatever the thickness, alone in a cell twice as deep as it is wide
    atoms = Atoms(numbers=[z], positions=[[BOX / 2, BOX / 2, BOX]], cell=[BOX, BOX, 2 * BOX], pbc=True)
    return float(sim.simulate_atoms(atoms, [], None).signals["haadf"].mean() * BOX * BOX)


def _table() -> dict:
    return json.loads(TABLE.read_text()) if TABLE.is_file() else {}


def cross_section(microscope, z: int, sampling: float, slice_thickness: float) -> float:
    """The cross-section of element ``z``: from the shipped table where it was made for this setting."""
    setting = _setting(microscope, sampling, slice_thickness)
    key = (json.dumps(setting, sort_keys=True, default=str), int(z))
    if key not in _MEMO:
        table = _table()
        if json.dumps(table.get("setting"), sort_keys=True, default=str) == key[0] and str(z) in table["haadf"]:
            _MEMO[key] = float(table["haadf"][str(z)])
        else:
            _MEMO[key] = isolated_atom(microscope, int(z), sampling, slice_thickness)
    return _MEMO[key]


def main() -> None:
    import time

    from data.library import load_library
    from data.simulate import SimulationConfig, Simulator

    sim = Simulator()  # the default microscope and potential sampling, as the pipeline's
    zs = sorted({int(site.specie.Z) for e in load_library() for site in e.structure})
    t0 = time.time()
    haadf = {}
    for z in zs:
        haadf[str(z)] = isolated_atom(sim.microscope, z, sim.sampling, SimulationConfig().slice_thickness)
        print(f"Z={z:3d}  {haadf[str(z)]:.6g} Å²", flush=True)
    TABLE.write_text(json.dumps({"setting": _setting(sim.microscope, sim.sampling, SimulationConfig().slice_thickness),
                                 "unit": "fraction of the beam x Å^2", "haadf": haadf,
                                 "seconds": round(time.time() - t0, 1)}, indent=1) + "\n")
    print(f"{len(zs)} elements in {time.time() - t0:.0f} s → {TABLE}")


if __name__ == "__main__":
    main()
