"""Structure prototypes: Wyckoff descriptions that turn a row of the material tables into a crystal.

A prototype fixes the space group, the occupied Wyckoff sites (by role letter) and the default
free coordinates; a material fixes species, lattice parameters and, where measured, the free
coordinates. Building from Wyckoff sites (``Structure.from_spacegroup``) rather than from a
P1 list keeps every entry in its true space group, which the reconstruction stage relies on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.groups import SpaceGroup


@dataclass(frozen=True)
class Site:
    role: str
    coords: tuple[str, str, str]  # fractional coordinates; may name free parameters ("x", "1/2", "-z")


@dataclass(frozen=True)
class Prototype:
    key: str
    name: str  # common name and Strukturbericht / AFLOW designation
    spacegroup: int
    system: str  # cubic | tetragonal | hexagonal (hexagonal setting also for trigonal groups)
    sites: tuple[Site, ...]
    defaults: dict[str, float] = field(default_factory=dict)

    @property
    def roles(self) -> list[str]:
        return sorted({s.role for s in self.sites})


def _s(role: str, x: str, y: str, z: str) -> Site:
    return Site(role, (x, y, z))


# Diamond and spinel use F-43m / origin-choice-2-free descriptions so that no origin-choice
# ambiguity of Fd-3m can creep in; the space group is re-detected by spglib afterwards.
BULK_PROTOTYPES: dict[str, Prototype] = {p.key: p for p in [
    Prototype("fcc", "fcc (A1, Cu)", 225, "cubic", (_s("A", "0", "0", "0"),)),
    Prototype("bcc", "bcc (A2, W)", 229, "cubic", (_s("A", "0", "0", "0"),)),
    Prototype("hcp", "hcp (A3, Mg)", 194, "hexagonal", (_s("A", "1/3", "2/3", "1/4"),)),
    Prototype("diamond", "diamond (A4, C)", 216, "cubic",
              (_s("A", "0", "0", "0"), _s("A", "1/4", "1/4", "1/4"))),
    Prototype("rocksalt", "rocksalt (B1, NaCl)", 225, "cubic",
              (_s("A", "0", "0", "0"), _s("X", "1/2", "1/2", "1/2"))),
    Prototype("cscl", "CsCl (B2)", 221, "cubic",
              (_s("A", "0", "0", "0"), _s("X", "1/2", "1/2", "1/2"))),
    Prototype("zincblende", "zincblende (B3, ZnS)", 216, "cubic",
              (_s("A", "0", "0", "0"), _s("X", "1/4", "1/4", "1/4"))),
    Prototype("wurtzite", "wurtzite (B4, ZnO)", 186, "hexagonal",
              (_s("A", "1/3", "2/3", "0"), _s("X", "1/3", "2/3", "u")), {"u": 0.375}),
    Prototype("fluorite", "fluorite (C1, CaF2)", 225, "cubic",
              (_s("A", "0", "0", "0"), _s("X", "1/4", "1/4", "1/4"))),
    Prototype("antifluorite", "antifluorite (C1, Li2O)", 225, "cubic",
              (_s("A", "1/4", "1/4", "1/4"), _s("X", "0", "0", "0"))),
    Prototype("perovskite", "cubic perovskite (E2_1, SrTiO3)", 221, "cubic",
              (_s("A", "0", "0", "0"), _s("B", "1/2", "1/2", "1/2"), _s("X", "1/2", "1/2", "0"))),
    Prototype("rutile", "rutile (C4, TiO2)", 136, "tetragonal",
              (_s("A", "0", "0", "0"), _s("X", "x", "x", "0")), {"x": 0.305}),
    Prototype("anatase", "anatase (C5, TiO2)", 141, "tetragonal",
              (_s("A", "0", "0", "0"), _s("X", "0", "0", "z")), {"z": 0.2083}),
    Prototype("corundum", "corundum (D5_1, Al2O3)", 167, "hexagonal",
              (_s("A", "0", "0", "z"), _s("X", "x", "0", "1/4")), {"z": 0.3523, "x": 0.3064}),
    Prototype("spinel", "spinel (H1_1, MgAl2O4)", 227, "cubic",
              (_s("A", "1/8", "1/8", "1/8"), _s("B", "1/2", "1/2", "1/2"), _s("X", "x", "x", "x")),
              {"x": 0.2624}),
    Prototype("nias", "NiAs (B8_1)", 194, "hexagonal",
              (_s("A", "0", "0", "0"), _s("X", "1/3", "2/3", "1/4"))),
    Prototype("cdi2", "CdI2 / 1T-MX2 (C6)", 164, "hexagonal",
              (_s("A", "0", "0", "0"), _s("X", "1/3", "2/3", "z")), {"z": 0.25}),
    Prototype("mos2_2h", "2H-MoS2 (C7)", 194, "hexagonal",
              (_s("A", "1/3", "2/3", "1/4"), _s("X", "1/3", "2/3", "z")), {"z": 0.621}),
    Prototype("l12", "L1_2 (Cu3Au)", 221, "cubic",
              (_s("A", "0", "0", "0"), _s("B", "0", "1/2", "1/2"))),
    Prototype("heusler", "Heusler (L2_1, Cu2MnAl)", 225, "cubic",
              (_s("A", "1/4", "1/4", "1/4"), _s("B", "0", "0", "0"), _s("C", "1/2", "1/2", "1/2"))),
    Prototype("half_heusler", "half-Heusler (C1_b, MgAgAs)", 216, "cubic",
              (_s("A", "0", "0", "0"), _s("B", "1/2", "1/2", "1/2"), _s("C", "1/4", "1/4", "1/4"))),
    Prototype("pyrite", "pyrite (C2, FeS2)", 205, "cubic",
              (_s("A", "0", "0", "0"), _s("X", "x", "x", "x")), {"x": 0.385}),
    Prototype("ilmenite", "ilmenite (FeTiO3)", 148, "hexagonal",
              (_s("A", "0", "0", "za"), _s("B", "0", "0", "zb"), _s("X", "xo", "yo", "zo")),
              {"za": 0.3554, "zb": 0.1464, "xo": 0.317, "yo": 0.020, "zo": 0.245}),
    Prototype("layered_oxide", "alpha-NaFeO2 layered oxide (LiCoO2)", 166, "hexagonal",
              (_s("A", "0", "0", "0"), _s("B", "0", "0", "1/2"), _s("X", "0", "0", "z")), {"z": 0.2396}),
    Prototype("l10", "L1_0 (CuAu)", 123, "tetragonal",
              (_s("A", "0", "0", "0"), _s("B", "1/2", "1/2", "1/2"))),
    Prototype("a15", "A15 (Cr3Si)", 223, "cubic",
              (_s("A", "1/4", "0", "1/2"), _s("B", "0", "0", "0"))),
    Prototype("reo3", "ReO3 (D0_9)", 221, "cubic",
              (_s("A", "0", "0", "0"), _s("X", "1/2", "0", "0"))),
    Prototype("alb2", "AlB2 (C32)", 191, "hexagonal",
              (_s("A", "0", "0", "0"), _s("B", "1/3", "2/3", "1/2"))),
    Prototype("wc", "WC (B_h)", 187, "hexagonal",
              (_s("A", "0", "0", "0"), _s("X", "1/3", "2/3", "1/2"))),
    Prototype("k2nif4", "K2NiF4 Ruddlesden-Popper n=1", 139, "tetragonal",
              (_s("A", "0", "0", "za"), _s("B", "0", "0", "0"), _s("X1", "0", "1/2", "0"),
               _s("X2", "0", "0", "zx")), {"za": 0.355, "zx": 0.16}),
    Prototype("graphite", "graphite (A9)", 194, "hexagonal",
              (_s("A", "0", "0", "1/4"), _s("A", "1/3", "2/3", "1/4"))),
    Prototype("hbn_bulk", "hexagonal BN (B_k)", 194, "hexagonal",
              (_s("A", "1/3", "2/3", "1/4"), _s("X", "1/3", "2/3", "3/4"))),
]}

MONOLAYER_PROTOTYPES = ("mx2_2h", "mx2_1t", "graphene", "hbn", "buckled_honeycomb", "gas_type")
VACUUM = 20.0  # Å of cell height for monolayers; > 2x the widest probe tail we simulate


def _value(expr: str, params: dict[str, float]) -> float:
    sign = -1.0 if expr.startswith("-") else 1.0
    expr = expr.lstrip("-")
    if expr in params:
        return sign * params[expr]
    if "/" in expr:
        num, den = expr.split("/")
        return sign * float(num) / float(den)
    return sign * float(expr)


def parse_species(text: str) -> dict[str, str]:
    """``"A=Na X=Cl"`` → ``{"A": "Na", "X": "Cl"}``."""
    out = {}
    for token in text.split():
        role, _, element = token.partition("=")
        if not element:
            raise ValueError(f"bad species assignment {token!r} (expected ROLE=Element)")
        out[role] = element
    return out


def parse_params(text: str) -> dict[str, float]:
    return {k: float(v) for k, _, v in (t.partition("=") for t in text.split())}


def build_bulk(prototype: str, species: dict[str, str], a: float, c: float | None = None,
               params: dict[str, float] | None = None) -> Structure:
    """Conventional cell of a bulk material from its prototype."""
    if prototype not in BULK_PROTOTYPES:
        raise KeyError(f"unknown bulk prototype {prototype!r}; known: {', '.join(BULK_PROTOTYPES)}")
    proto = BULK_PROTOTYPES[prototype]
    missing = set(proto.roles) - set(species)
    if missing:
        raise ValueError(f"{prototype}: species for roles {sorted(missing)} missing")
    p = {**proto.defaults, **(params or {})}
    if proto.system == "cubic":
        lattice = Lattice.cubic(a)
    elif c is None or not np.isfinite(c):
        raise ValueError(f"{prototype} is {proto.system}: lattice parameter c is required")
    elif proto.system == "tetragonal":
        lattice = Lattice.tetragonal(a, c)
    else:
        lattice = Lattice.hexagonal(a, c)
    # Structure.from_spacegroup rebuilds the SpaceGroup (0.6 s) on every call; orbits from a
    # cached group are the same computation
    group = _space_group(proto.spacegroup)
    elements, coords = [], []
    for site in proto.sites:
        orbit = group.get_orbit([_value(x, p) for x in site.coords], tol=1e-3)
        elements += [species[site.role]] * len(orbit)
        coords += list(orbit)
    return Structure(lattice, elements, coords)


@lru_cache(maxsize=None)
def _space_group(number: int) -> SpaceGroup:
    return SpaceGroup.from_int_number(number)


def build_monolayer(prototype: str, species: dict[str, str], a: float, thickness: float = 0.0,
                    metal_separation: float = 0.0) -> Structure:
    """A single layer in a hexagonal cell with ``VACUUM`` Å of height, centred at c/2."""
    z0 = VACUUM / 2
    h = thickness / 2
    A, X = species.get("A"), species.get("X", species.get("A"))
    if prototype == "mx2_2h":
        sites = [(A, 0, 0, z0), (X, 1 / 3, 2 / 3, z0 + h), (X, 1 / 3, 2 / 3, z0 - h)]
    elif prototype == "mx2_1t":
        sites = [(A, 0, 0, z0), (X, 1 / 3, 2 / 3, z0 + h), (X, 2 / 3, 1 / 3, z0 - h)]
    elif prototype in ("graphene", "hbn"):
        sites = [(A, 1 / 3, 2 / 3, z0), (X, 2 / 3, 1 / 3, z0)]
    elif prototype == "buckled_honeycomb":
        sites = [(A, 1 / 3, 2 / 3, z0 + h), (A, 2 / 3, 1 / 3, z0 - h)]
    elif prototype == "gas_type":
        m = metal_separation / 2
        sites = [(A, 2 / 3, 1 / 3, z0 + m), (A, 2 / 3, 1 / 3, z0 - m),
                 (X, 1 / 3, 2 / 3, z0 + h), (X, 1 / 3, 2 / 3, z0 - h)]
    else:
        raise KeyError(f"unknown monolayer prototype {prototype!r}; known: {', '.join(MONOLAYER_PROTOTYPES)}")
    lattice = Lattice.hexagonal(a, VACUUM)
    return Structure(lattice, [s[0] for s in sites], [[x, y, z / VACUUM] for _, x, y, z in sites])
