"""Prototypes and zone axes: crystallographic facts."""
import numpy as np
import pytest
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from data.prototypes import BULK_PROTOTYPES, build_bulk, build_monolayer
from data.zone_axes import describe, direction_label, select_zone_axes, unique_directions

ROLES = {"A": "Ti", "B": "Sr", "C": "Al", "X": "O", "X1": "O", "X2": "F"}


@pytest.mark.parametrize("key", sorted(BULK_PROTOTYPES))
def test_prototype_keeps_its_space_group(key):
    p = BULK_PROTOTYPES[key]
    s = build_bulk(key, {r: ROLES[r] for r in p.roles}, 4.0, None if p.system == "cubic" else 6.5)
    n = SpacegroupAnalyzer(s, symprec=1e-3).get_space_group_number()
    expected = 227 if key == "diamond" else p.spacegroup  # F-43m with both 8a sites filled is Fd-3m
    assert n == expected


def test_rocksalt_and_wurtzite_bond_lengths():
    nacl = build_bulk("rocksalt", {"A": "Na", "X": "Cl"}, 5.64)
    d = nacl.distance_matrix + np.eye(len(nacl)) * 99
    assert d.min() == pytest.approx(5.64 / 2, abs=1e-6)
    gan = build_bulk("wurtzite", {"A": "Ga", "X": "N"}, 3.189, 5.185, {"u": 0.377})
    d = gan.distance_matrix + np.eye(len(gan)) * 99
    assert d.min() == pytest.approx(0.377 * 5.185, abs=0.01)  # Ga-N bond along c


def test_anatase_has_twelve_atoms_and_octahedral_titanium():
    s = build_bulk("anatase", {"A": "Ti", "X": "O"}, 3.785, 9.514)
    assert len(s) == 12
    ti = [i for i, site in enumerate(s) if site.specie.symbol == "Ti"][0]
    assert len(s.get_neighbors(s[ti], 2.1)) == 6


def test_monolayer_is_one_layer_with_vacuum():
    s = build_monolayer("mx2_2h", {"A": "Mo", "X": "S"}, 3.16, 3.17)
    z = s.cart_coords[:, 2]
    assert z.max() - z.min() == pytest.approx(3.17, abs=1e-6)
    assert s.lattice.c - (z.max() - z.min()) > 15


def test_perovskite_001_projection():
    s = build_bulk("perovskite", {"A": "Sr", "B": "Ti", "X": "O"}, 3.905)
    za, atoms, cols = describe(s, (0, 0, 1))
    assert za.n_columns == 4 and za.repeat_length == pytest.approx(3.905)
    assert za.min_column_separation == pytest.approx(3.905 / 2)
    comps = sorted("".join(sorted(c.elements)) for c in cols)
    assert comps == ["O", "O", "OTi", "Sr"]


def test_fcc_110_uses_the_primitive_repeat():
    # along a centred-lattice direction the repeat is a/√2, not the conventional a√2
    a = 3.615
    s = build_bulk("fcc", {"A": "Cu"}, a)
    za, atoms, _ = describe(s, (1, 1, 0))
    assert za.repeat_length == pytest.approx(a / np.sqrt(2))
    assert sorted(za.cell) == pytest.approx([a / np.sqrt(2), a], rel=1e-6)
    assert za.n_columns == 2 and len(atoms) == 2
    assert za.min_column_separation == pytest.approx(a * np.sqrt(3 / 8), rel=1e-6)


def test_diamond_110_dumbbells():
    s = build_bulk("diamond", {"A": "Si"}, 5.431)
    za, _, _ = describe(s, (1, 1, 0))
    assert za.min_column_separation == pytest.approx(5.431 / 4, rel=1e-3)  # the 1.36 Å Si dumbbell


def test_hexagonal_oblique_direction_is_rejected():
    s = build_bulk("hcp", {"A": "Mg"}, 3.209, 5.211)
    with pytest.raises(ValueError):
        describe(s, (1, 1, 1))
    assert direction_label((1, 1, 0), hexagonal=True) == "[110] = [11-20]"
    assert direction_label((1, 0, 0), hexagonal=True) == "[100] = [2-1-10]"


def test_symmetry_equivalent_directions_counted_once():
    s = build_bulk("fcc", {"A": "Cu"}, 3.615)
    dirs = unique_directions(s, max_index=1)
    assert sorted(dirs) == sorted([(1, 0, 0), (1, 1, 0), (1, 1, 1)])
    axes = select_zone_axes(s)
    assert [a.uvw for a in axes[:3]] == [(1, 0, 0), (1, 1, 0), (1, 1, 1)]
