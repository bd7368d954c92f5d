"""Zone axes: orient a crystal along a lattice direction and describe its projected atom columns.

The beam runs along a lattice direction [uvw] (conventional basis). We build the smallest cell
whose in-plane vectors are lattice vectors *perpendicular* to the beam, so the cell is a true
periodic piece of the 3-D crystal with c along z. That one cell serves the library (column
statistics), the simulator (it is the repeat unit abTEM sees) and the labels.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import reduce

import numpy as np
from ase import Atoms
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

HAADF_Z_EXPONENT = 1.7  # Rutherford-like HAADF contrast ~ Z^1.7; only used to weight columns
# Projected atoms closer than this image as one (elongated) column on any current STEM.
MERGE_DISTANCE = 0.5
# Resolvable: nearest distinct columns >= 1 Å; where a crystal has fewer than three such axes,
# axes down to 0.6 Å (the information limit of aberration-corrected instruments) fill in.
MIN_SEPARATION, FALLBACK_MIN_SEPARATION = 1.0, 0.6


@dataclass
class Column:
    x: float  # Å, in the oriented cell
    y: float
    elements: dict[str, int]  # atoms of each element per repeat length along the beam
    z_weight: float  # sum of Z^1.7 per Å of thickness (a HAADF brightness proxy)

    @property
    def element(self) -> str:
        return max(self.elements, key=lambda e: (self.elements[e], e))


@dataclass
class ZoneAxis:
    uvw: tuple[int, int, int]
    label: str  # "[110]" or, for hexagonal lattices, also Miller-Bravais "[11-20]"
    repeat_length: float  # Å along the beam
    cell: tuple[float, float]  # orthogonal in-plane repeat (Lx, Ly) in Å
    n_columns: int
    min_column_separation: float  # Å, nearest distinct projected columns

    def to_dict(self) -> dict:
        return {"uvw": list(self.uvw), "label": self.label, "repeat_length": round(self.repeat_length, 4),
                "cell": [round(v, 4) for v in self.cell], "n_columns": self.n_columns,
                "min_column_separation": round(self.min_column_separation, 4)}


def _gcd(v) -> int:
    return reduce(math.gcd, [abs(int(x)) for x in v])


def direction_label(uvw, hexagonal: bool) -> str:
    def fmt(v):
        return "[" + "".join(str(int(x)) if x >= 0 else f"-{abs(int(x))}" for x in v) + "]"
    if not hexagonal:
        return fmt(uvw)
    u, v, w = uvw
    four = np.array([2 * u - v, 2 * v - u, -(u + v), 3 * w])
    four //= _gcd(four)
    return f"{fmt(uvw)} = {fmt(four)}"


def _integer_vectors(r: int) -> np.ndarray:
    g = np.array(list(itertools.product(range(-r, r + 1), repeat=3)))
    return g[np.any(g != 0, axis=1)]


MAX_PRIMITIVE_SEARCH = 256  # atoms; the library's largest conventional cell has 56


def oriented_cell(structure: Structure, uvw, max_index: int = 6, max_atoms: int = 2000) -> Atoms:
    """Periodic cell of ``structure`` with c ∥ [uvw] (along z) and a, b ⊥ c, a along x.

    The in-plane vectors are the shortest lattice vectors perpendicular to the beam; the
    in-plane cell may still be oblique — ``abtem.orthogonalize_cell`` squares it.
    """
    d_conv = np.asarray(uvw, dtype=int)
    if not np.any(d_conv):
        raise ValueError("zone axis [000] is not a direction")
    d = d_conv @ structure.lattice.matrix
    # work in the primitive cell (same Cartesian frame): along a centred-lattice direction the
    # true repeat is shorter than the conventional [uvw] vector (fcc [110]: a/√2, not a√2)
    # (pymatgen's primitive search grows steeply with N; big P1 models such as the amorphous
    # negatives of data.negatives are their own repeat, so they skip it)
    if len(structure) <= MAX_PRIMITIVE_SEARCH:
        structure = structure.get_primitive_structure()
    lat = structure.lattice.matrix
    p = np.linalg.solve(lat.T, d)
    d_frac = np.round(p * 12).astype(int)
    if not np.allclose(d_frac, p * 12, atol=1e-4):
        raise ValueError(f"[{uvw}] is not a lattice direction of the primitive cell")
    d_frac //= _gcd(d_frac)
    d = d_frac @ lat
    cand = _integer_vectors(max_index)
    cart = cand @ lat
    perp = np.abs(cart @ d) < 1e-6 * np.linalg.norm(d) * np.linalg.norm(cart, axis=1)
    cand, cart = cand[perp], cart[perp]
    if len(cand) < 2:  # an oblique cell (a triclinic distortion of a cubic one) can lack a zone plane
        raise ValueError(f"no lattice vectors perpendicular to [{uvw}] within index {max_index}")
    order = np.argsort(np.linalg.norm(cart, axis=1), kind="stable")
    cand, cart = cand[order], cart[order]
    a_i = 0
    # b: the shortest vector that makes the smallest non-zero in-plane area with a
    areas = np.linalg.norm(np.cross(cart[a_i], cart), axis=1)
    ok = areas > 1e-6
    if not ok.any():
        raise ValueError(f"no perpendicular lattice vectors found for [{uvw}] within index {max_index}")
    min_area = areas[ok].min()
    b_i = int(np.flatnonzero(ok & (areas < min_area * (1 + 1e-6)))[0])
    M = np.array([cand[a_i], cand[b_i], d_frac])
    det = round(abs(np.linalg.det(M)))
    if len(structure) * det > max_atoms:
        raise ValueError(f"oriented cell along {list(uvw)} would hold {len(structure) * det} atoms")
    sc = structure.copy()
    sc.make_supercell(M)
    # right-handed frame: x along a, z along the beam
    ex = sc.lattice.matrix[0] / np.linalg.norm(sc.lattice.matrix[0])
    ez = d / np.linalg.norm(d)
    ey = np.cross(ez, ex)
    R = np.array([ex, ey, ez])
    cell = sc.lattice.matrix @ R.T
    if cell[1, 1] < 0:  # keep b in the upper half plane
        cell[1] *= -1
        frac = sc.frac_coords * np.array([1, -1, 1])
    else:
        frac = sc.frac_coords
    cell[np.abs(cell) < 1e-9] = 0.0
    atoms = Atoms(symbols=[str(s.specie) for s in sc], scaled_positions=frac % 1.0, cell=cell, pbc=True)
    atoms.wrap()
    return atoms


def orthogonal_cell(atoms: Atoms) -> Atoms:
    """Square the in-plane cell (abTEM needs an orthogonal box); c is already ∥ z."""
    from abtem import orthogonalize_cell

    cell = atoms.cell.array
    if abs(cell[1, 0]) < 1e-6 and abs(cell[0, 1]) < 1e-6:
        return atoms
    return orthogonalize_cell(atoms, max_repetitions=8)


def column_members(atoms: Atoms, tol: float = MERGE_DISTANCE) -> tuple[list[list[int]], list[np.ndarray]]:
    """The atoms of each column of an orthogonal oriented cell (indices), and each column's first atom's
    projection: atoms whose projections lie within ``tol`` of a column's first atom join it."""
    Lx, Ly = atoms.cell[0, 0], atoms.cell[1, 1]
    xy = atoms.positions[:, :2] % [Lx, Ly]
    cols: list[list[int]] = []
    centres: list[np.ndarray] = []
    for i, p in enumerate(xy):
        for k, c in enumerate(centres):
            dd = p - c
            dd -= np.round(dd / [Lx, Ly]) * [Lx, Ly]
            if np.hypot(*dd) < tol:
                cols[k].append(i)
                break
        else:
            cols.append([i])
            centres.append(p)
    return cols, centres


def project_columns(atoms: Atoms, tol: float = MERGE_DISTANCE) -> list[Column]:
    """Group atoms of an orthogonal oriented cell into columns along z (``column_members``); each column
    sits at its atoms' Z^1.7-weighted centroid, which is where a HAADF image of the pair peaks.
    """
    from ase.data import atomic_numbers

    L = atoms.cell[2, 2]
    Lx, Ly = atoms.cell[0, 0], atoms.cell[1, 1]
    xy = atoms.positions[:, :2] % [Lx, Ly]
    symbols = atoms.get_chemical_symbols()
    cols, centres = column_members(atoms, tol)
    out = []
    for idx, c in zip(cols, centres):
        counts: dict[str, int] = {}
        for i in idx:
            counts[symbols[i]] = counts.get(symbols[i], 0) + 1
        zw = np.array([atomic_numbers[symbols[i]] ** HAADF_Z_EXPONENT for i in idx])
        dd = xy[idx] - c
        dd -= np.round(dd / [Lx, Ly]) * [Lx, Ly]
        x, y = (c + (zw[:, None] * dd).sum(0) / zw.sum()) % [Lx, Ly]
        out.append(Column(float(x), float(y), counts, float(zw.sum() / L)))
    return out


def min_separation(columns: list[Column], cell: tuple[float, float]) -> float:
    if len(columns) < 2:
        return float(min(cell))
    p = np.array([[c.x, c.y] for c in columns])
    d = p[:, None, :] - p[None, :, :]
    d -= np.round(d / cell) * cell
    r = np.hypot(d[..., 0], d[..., 1])
    r[np.diag_indices(len(p))] = np.inf
    return float(min(r.min(), min(cell)))


def is_hexagonal(structure: Structure) -> bool:
    return SpacegroupAnalyzer(structure, symprec=1e-3).get_crystal_system() in ("hexagonal", "trigonal")


def describe(structure: Structure, uvw, hexagonal: bool | None = None) -> tuple[ZoneAxis, Atoms, list[Column]]:
    """Zone-axis summary, the orthogonal oriented cell (abTEM's repeat unit) and its columns."""
    atoms = orthogonal_cell(oriented_cell(structure, uvw))
    cols = project_columns(atoms)
    cell = (float(atoms.cell[0, 0]), float(atoms.cell[1, 1]))
    if hexagonal is None:
        hexagonal = is_hexagonal(structure)
    za = ZoneAxis(tuple(int(x) for x in uvw), direction_label(uvw, hexagonal), float(atoms.cell[2, 2]), cell,
                  len(cols), min_separation(cols, cell))
    return za, atoms, cols


def unique_directions(structure: Structure, max_index: int = 2) -> list[tuple[int, int, int]]:
    """Symmetry-inequivalent directions with |u|,|v|,|w| ≤ max_index, lowest index first."""
    ops = SpacegroupAnalyzer(structure, symprec=1e-3).get_point_group_operations(cartesian=False)
    seen, out = set(), []
    r = range(-max_index, max_index + 1)
    for v in sorted(itertools.product(r, r, r), key=lambda v: (sum(map(abs, v)), [-x for x in v])):
        if not any(v) or _gcd(v) != 1:
            continue
        orbit = {tuple(int(round(x)) for x in op.rotation_matrix @ np.array(v)) for op in ops}
        orbit |= {tuple(-x for x in o) for o in orbit}
        key = max(orbit)
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def select_zone_axes(structure: Structure, n: int = 4, max_repeat: float = 20.0, max_area: float = 600.0,
                     max_index: int = 2) -> list[ZoneAxis]:
    """Up to ``n`` lowest-index axes whose projected columns a STEM can resolve.

    Only directions with lattice vectors perpendicular to them qualify: for those the crystal is a
    periodic box along the beam, which multislice needs (e.g. hexagonal [111] is not).
    """
    hexagonal = is_hexagonal(structure)
    resolvable, marginal = [], []
    for uvw in unique_directions(structure, max_index):
        try:
            za, _, _ = describe(structure, uvw, hexagonal)
        except ValueError:
            continue
        if za.repeat_length > max_repeat or za.cell[0] * za.cell[1] > max_area:
            continue
        if za.min_column_separation >= MIN_SEPARATION:
            resolvable.append(za)
        elif za.min_column_separation >= FALLBACK_MIN_SEPARATION:
            marginal.append(za)
        if len(resolvable) == n:
            break
    if len(resolvable) < 3:
        resolvable += marginal[: 3 - len(resolvable)]
    return resolvable
