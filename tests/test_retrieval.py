"""Contrastive retrieval: encoders, the shipped index, the element filter, real queries, training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from data.library import LIBRARY_FILE, get_entry, load_library
from data.scan import ScanGeometry, render
from data.simulate import Simulator
from model.denoiser import Denoiser
from model.retrieval import (VIEW, RetrievalConfig, RetrievalModel, Retriever, TemplateIndex, canonical_view,
                             library_graphs, pair_key, zone_graph, file_hash)


@pytest.fixture(scope="module")
def retriever():
    return Retriever.from_checkpoint()


@pytest.fixture(scope="module")
def sim():
    return Simulator(cache_dir=".cache/repeats")


def clean_image(sim, entry_id: str, uvw, rotation: float, pixel_size: float = 0.12, size: int = 256,
                structure=None) -> np.ndarray:
    repeat = sim.simulate(structure or get_entry(entry_id).structure, uvw, 60.0)
    return render(repeat, ScanGeometry(shape=(size, size), pixel_size=pixel_size, rotation=rotation,
                                       offset=(0.7, 1.3)))


def test_embeddings_are_unit_vectors_of_the_configured_size():
    from torch_geometric.data import Batch

    torch.manual_seed(0)
    model = RetrievalModel(RetrievalConfig(embed_dim=32, graph_hidden=16, graph_layers=2)).eval()
    img = model.image(torch.randn(3, 1, VIEW, VIEW))
    graphs = [zone_graph(get_entry("Si-diamond").structure, (1, 1, 0)),
              zone_graph(get_entry("SrTiO3-perovskite").structure, (0, 0, 1))]
    g = model.graph(Batch.from_data_list(graphs))
    assert img.shape == (3, 32) and g.shape == (2, 32)
    assert torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(g.norm(dim=1), torch.ones(2), atol=1e-5)


def test_structure_graph_sees_columns_along_the_beam():
    # Si [110]: atoms stacked along the beam in dumbbell columns; the nearest same-column atom is one
    # beam repeat (a/√2 · … = 3.84 Å) away, so edges with zero in-plane distance exist
    g = zone_graph(get_entry("Si-diamond").structure, (1, 1, 0))
    assert g.num_nodes >= 2 and g.edge_index.shape[1] > 0
    assert g.x.shape[1] == 10 and g.edge_attr.shape[1] == 36
    # a rotation about the beam cannot change the graph: its features are distances only
    assert torch.isfinite(g.edge_attr).all()


def test_canonical_view_resamples_to_the_canonical_pixel():
    img = np.zeros((200, 200), np.float32)
    img[::10, :] = 1.0  # lines every 10 px at 0.1 Å = every 1 Å
    v = canonical_view(img, 0.1, 64)[0]
    assert v.shape == (64, 64)
    prof = v.mean(1)
    spectrum = np.abs(np.fft.rfft(prof - prof.mean()))
    period_px = 64 / np.argmax(spectrum)
    assert period_px == pytest.approx(1.0 / 0.2, rel=0.05)  # 1 Å at 0.2 Å/px


def test_fft_channel_holds_the_lattice_spots_wherever_the_crystal_sits(tmp_path):
    from model.retrieval import fft_magnitude, load_model, save_checkpoint

    # a square lattice of period 1 Å at the canonical 0.2 Å/px: 5 px, spots 96/5 = 19.2 px from the centre
    yy, xx = np.mgrid[:VIEW, :VIEW].astype(np.float32)
    lattice = lambda dx: np.cos(2 * np.pi * (xx - dx) / 5) + np.cos(2 * np.pi * yy / 5)  # noqa: E731
    f = fft_magnitude(torch.from_numpy(lattice(0.0))[None, None])[0, 0].numpy()
    c = VIEW // 2
    i, j = np.unravel_index(np.argmax(f), f.shape)
    assert {abs(i - c), abs(j - c)} in ({0, 19}, {0, 20})  # on an axis, at the spot's frequency
    shifted = fft_magnitude(torch.from_numpy(lattice(2.3))[None, None])[0, 0].numpy()
    # the crystal's position is gone (up to the window), where the views themselves barely correlate
    assert np.corrcoef(f.ravel(), shifted.ravel())[0, 1] > 0.95
    assert np.corrcoef(lattice(0.0).ravel(), lattice(2.3).ravel())[0, 1] < 0.1
    # the image encoder's second channel is part of the architecture a checkpoint records
    torch.manual_seed(0)
    model = RetrievalModel(RetrievalConfig(embed_dim=16, graph_hidden=16, graph_layers=2, fft=True)).eval()
    x = torch.from_numpy(lattice(0.0))[None, None]
    loaded, _ = load_model(save_checkpoint(model, tmp_path / "fft.pt"))
    assert loaded.config.fft and loaded.image.backbone.conv1[0].in_channels == 2
    assert torch.allclose(loaded.image(x), model.image(x), atol=1e-6)


def test_shipped_index_matches_shipped_library(retriever):
    index = retriever.index
    lib = load_library()
    want = {pair_key(e.id, z["uvw"]) for e in lib for z in e.zone_axes}
    have = {pair_key(r["template_id"], r["zone_axis"]) for r in index.records}
    assert have == want and len(index) == len(want)
    assert index.meta["library_sha256"] == file_hash(LIBRARY_FILE)
    assert index.embeddings.shape == (len(want), retriever.model.config.embed_dim)
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-4)


def test_index_is_what_the_shipped_model_embeds(retriever):
    from model.retrieval import embed_graphs

    graphs = library_graphs()
    recs = retriever.index.records[:20]
    emb = embed_graphs(retriever.model, [graphs[pair_key(r["template_id"], r["zone_axis"])] for r in recs])
    assert np.allclose(emb, retriever.index.embeddings[:20], atol=1e-4)


def test_index_must_come_from_the_model_it_serves(retriever):
    from copy import deepcopy

    from model.retrieval import RetrievalError

    # an index written before a config field existed (no "fft" key) still serves a model with its default
    old = deepcopy(retriever.index)
    old.meta["model"] = {k: v for k, v in old.meta["model"].items() if k != "fft"}
    assert Retriever(retriever.model, old).index is old
    other = deepcopy(retriever.index)
    other.meta["model"] = retriever.model.config.to_dict() | {"embed_dim": 64}
    with pytest.raises(RetrievalError, match="different retrieval model"):
        Retriever(retriever.model, other)


def test_element_filter_never_returns_a_foreign_element(retriever):
    rng = np.random.default_rng(0)
    for elements in (["Sr", "Ti", "O"], ["Si"], ["Mo", "S"], ["Ga", "As", "N"]):
        q = rng.normal(size=retriever.index.embeddings.shape[1]).astype(np.float32)
        cands = retriever.index.search(q / np.linalg.norm(q), 50, elements=elements)
        assert cands, elements
        by_id = {r["template_id"]: r for r in retriever.index.records}
        for c in cands:
            assert set(by_id[c.template_id]["elements"]) <= set(elements)
    q = retriever.index.embeddings[0]
    first = retriever.index.records[0]["template_id"]
    assert all(c.template_id != first for c in retriever.index.search(q, 20, exclude=[first]))


def test_index_lattices_are_the_projected_column_lattices(retriever):
    from model.lattice import DETECTED_COLUMN_SETS
    from model.retrieval import pair_lattices

    index = retriever.index
    assert index.lattices is not None and index.lattices.shape == (len(index), len(DETECTED_COLUMN_SETS), 3)
    rows = [0, 1, len(index) // 2, len(index) - 1]
    # atol: |cos γ| of a right angle is rounding noise (~2e-16), which differs between machines
    np.testing.assert_allclose(pair_lattices([index.records[i] for i in rows]), index.lattices[rows], rtol=1e-9,
                               atol=1e-12)
    # SrTiO3 [001]: Sr and TiO columns alike in position give the a/√2 square lattice; Sr alone
    # (Z^1.7 weight 2.1x a TiO column's) the cell a; with the O columns too, a/2
    k = next(i for i, r in enumerate(index.records)
             if r["template_id"] == "SrTiO3-perovskite" and r["zone_label"] == "[100]")
    a = get_entry("SrTiO3-perovskite").structure.lattice.a
    assert list(DETECTED_COLUMN_SETS) == ["visible", "heavy", "all"]
    np.testing.assert_allclose(index.lattices[k], [[a / np.sqrt(2), a / np.sqrt(2), 0.0], [a, a, 0.0],
                                                   [a / 2, a / 2, 0.0]], atol=1e-6)


def test_a_lattice_of_only_the_heavy_columns_still_finds_its_template(retriever):
    """SnS2 monolayer [001]: Sn and the two S2 columns alike in position make an a/√3 lattice; a low
    dose that loses the S2 columns leaves the Sn lattice a, which must still bring SnS2 in."""
    from model.lattice import lattice_metric
    from model.retrieval import lattice_mismatch

    index = retriever.index
    k = next(i for i, r in enumerate(index.records)
             if r["template_id"] == "SnS2-mx2_1t-1L" and r["zone_axis"] == [0, 0, 1])
    a = get_entry("SnS2-mx2_1t-1L").structure.lattice.a
    sn_only = lattice_metric(np.array([[a, 0.0], [a / 2, a * np.sqrt(3) / 2]]))
    assert lattice_mismatch(sn_only, index.lattices[k:k + 1])[0] < 1e-6
    assert lattice_mismatch(sn_only, index.lattices[k:k + 1, 0])[0] > 0.4  # the visible columns' alone


def test_lattice_mismatch_is_rotation_free_and_scale_aware():
    from model.lattice import lattice_metric
    from model.retrieval import lattice_mismatch

    b = np.array([[3.9, 0.0], [0.0, 3.9]])
    rot = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    m = lattice_metric(b @ rot.T)
    table = np.array([lattice_metric(b), lattice_metric(1.04 * b), lattice_metric(np.array([[3.9, 0], [1.0, 3.9]]))])
    np.testing.assert_allclose(lattice_mismatch(m, table)[:2], [0.0, 0.04], atol=1e-9)
    assert lattice_mismatch(m, table)[2] > 0.2  # oblique: |cos γ| differs
    # without a scale only the shape counts: 4 % larger is the same square
    np.testing.assert_allclose(lattice_mismatch(m, table, scale_known=False)[:2], 0.0, atol=1e-9)
    # several lattices per row: the closest counts
    np.testing.assert_allclose(lattice_mismatch(m, np.stack([table[[1, 2]], table[[2, 0]]])), [0.04, 0.0], atol=1e-9)


def test_lattice_candidates_fit_the_measured_lattice_and_obey_the_filter(retriever, sim):
    from model.lattice import fit_lattice, lattice_metric
    from model.retrieval import LATTICE_TOL, lattice_mismatch

    img = clean_image(sim, "SrTiO3-perovskite", (0, 0, 1), rotation=17.0)
    den_cols = Denoiser.from_checkpoint()(img, 0.12).columns
    lattice = fit_lattice(den_cols.xy, img, 0.12)
    k = 5
    cands = retriever.query(img, 0.12, k=k, lattice=lattice, lattice_k=8)
    assert [c.rank for c in cands] == list(range(1, len(cands) + 1)) and len(cands) == k + 8
    assert all(c.source == "embedding" for c in cands[:k]) and all(c.source == "lattice" for c in cands[k:])
    assert all(c.lattice_mismatch <= LATTICE_TOL for c in cands[k:])
    # the second half of them are the closest lattices of all the templates not yet taken
    mis = lattice_mismatch(lattice_metric(lattice.vectors), retriever.index.lattice_table())
    taken = {(c.template_id, tuple(c.zone_axis)) for c in cands[:k + 4]}
    rest = sorted(m for m, r in zip(mis, retriever.index.records) if (r["template_id"], tuple(r["zone_axis"])) not in taken)
    np.testing.assert_allclose([c.lattice_mismatch for c in cands[k + 4:]], rest[:4])
    assert len({(c.template_id, tuple(c.zone_axis)) for c in cands}) == len(cands)
    # the lattice brings the truth in even where the embedding ranks it low
    assert any(c.template_id == "SrTiO3-perovskite" and c.zone_label == "[100]" for c in cands)
    filtered = retriever.query(img, 0.12, k=k, elements=["Ba", "Sr", "Ti", "O"], lattice=lattice, lattice_k=8)
    by_id = {r["template_id"]: r for r in retriever.index.records}
    assert all(set(by_id[c.template_id]["elements"]) <= {"Ba", "Sr", "Ti", "O"} for c in filtered)


@pytest.mark.parametrize("index, count", [(2, 3), (3, 4), (4, 7)])  # σ(n): the sum of n's divisors
def test_sublattices_are_every_lattice_of_the_index(index, count):
    from model.lattice import sublattices

    B = np.array([[1.13, 0.0], [0.55, 2.68]])
    found = sublattices(B, index)
    assert len(found) == count
    for C in found:
        M = C @ np.linalg.inv(B)  # each vector an integer combination of B's
        np.testing.assert_allclose(M, np.round(M), atol=1e-9)
        assert abs(np.linalg.det(np.round(M))) == pytest.approx(index)
    # distinct lattices: none holds another's vectors
    for i in range(count):
        for j in range(i + 1, count):
            M = found[i] @ np.linalg.inv(found[j])
            assert not np.allclose(M, np.round(M), atol=1e-6)


def test_a_lattice_a_pseudo_translation_made_finer_still_brings_its_crystal(retriever, sim):
    """NiS [320]: columns 1.13 Å apart in rows 5.35 Å apart. A detection whose fitted lattice a
    pseudo-translation halved (the row's centring: half the cell) fits no template of NiS; the
    index-2 lattices of what was found bring NiS [320] back, first by closeness."""
    from types import SimpleNamespace

    from model.lattice import lattice_metric
    from model.retrieval import LATTICE_TOL, fitting_lattices

    index = retriever.index
    k = next(i for i, r in enumerate(index.records) if r["template_id"] == "NiS-nias" and r["zone_axis"] == [3, 2, 0])
    l1, l2, cos = index.lattices[k, 0]
    assert cos == pytest.approx(0.0, abs=1e-6) and l2 > 4 * l1
    b1, b2 = np.array([l1, 0.0]), np.array([0.0, l2])
    finer = SimpleNamespace(vectors=np.array([b1, (b1 + b2) / 2]))
    assert fitting_lattices(lattice_metric(finer.vectors), index.lattice_table(), True)[0][k] > LATTICE_TOL
    img = clean_image(sim, "SrTiO3-perovskite", (0, 0, 1), rotation=17.0, pixel_size=0.1)  # any embedding will do
    key = lambda c: (c.template_id, tuple(c.zone_axis))  # noqa: E731
    plain = retriever.query(img, 0.1, k=10, lattice=finer, lattice_k=40)
    assert ("NiS-nias", (3, 2, 0)) not in {key(c) for c in plain}
    cands = retriever.query(img, 0.1, k=10, lattice=finer, lattice_k=40, coarser_k=4)
    assert [key(c) for c in cands[:len(plain)]] == [key(c) for c in plain]
    extra = cands[len(plain):]
    assert 1 <= len(extra) <= 4 and all(c.source == "coarser_lattice" for c in extra)
    assert key(extra[0]) == ("NiS-nias", (3, 2, 0)) and extra[0].lattice_mismatch < 0.01
    assert all(c.lattice_mismatch <= LATTICE_TOL for c in extra)
    assert len({key(c) for c in cands}) == len(cands)
    # without a pixel size the cell's size is not known, and no coarser lattice is tried
    assert all(c.source != "coarser_lattice" for c in retriever.query(img, None, k=3, lattice=finer, lattice_k=4,
                                                                          coarser_k=4))


def test_specimen_kind_filter_keeps_one_kind_of_template(retriever, sim):
    from model.lattice import fit_lattice

    # NiTe2's monolayer and its bulk (CdI2 type, AA stacked) project to the same lattice along [001]
    img = clean_image(sim, "NiTe2-mx2_1t-1L", (0, 0, 1), rotation=11.0, pixel_size=0.1)
    lattice = fit_lattice(Denoiser.from_checkpoint()(img, 0.1).columns.xy, img, 0.1)
    by_id = {r["template_id"]: r for r in retriever.index.records}
    both = retriever.query(img, 0.1, k=10, lattice=lattice, lattice_k=40)
    assert {"NiTe2-mx2_1t-1L", "NiTe2-cdi2"} <= {c.template_id for c in both}
    for kind, other in (("monolayer", "NiTe2-cdi2"), ("bulk", "NiTe2-mx2_1t-1L")):
        cands = retriever.query(img, 0.1, k=10, lattice=lattice, lattice_k=40, kind=kind)
        assert cands and all(by_id[c.template_id]["kind"] == kind == c.kind for c in cands)
        assert other not in {c.template_id for c in cands}
        hinted = retriever.query(img, 0.1, k=10, elements=["Ni", "Te"], lattice=lattice, lattice_k=40, kind=kind)
        assert hinted and all(c.kind == kind and set(by_id[c.template_id]["elements"]) <= {"Ni", "Te"} for c in hinted)
    with pytest.raises(ValueError, match="kind"):
        retriever.index.allowed(kind="thin film")


def _perovskite_001_ranks(retriever, sim, k: int) -> list[int]:
    # the library labels cubic <001> by its symmetry-equivalent representative [100]
    img = clean_image(sim, "SrTiO3-perovskite", (0, 0, 1), rotation=17.0)
    cands = retriever.query(img, 0.12, k=k)
    return [c.rank for c in cands if c.prototype == "perovskite" and c.zone_label == "[100]"]


def test_clean_srtio3_001_is_among_the_closed_loop_candidates(retriever, sim):
    from model.pipeline import Options

    assert _perovskite_001_ranks(retriever, sim, Options().top_k)


@pytest.mark.xfail(strict=True, reason="issue #4 target: the shipped, undertrained encoder ranks perovskite [001] "
                                       "outside its top 3 here; the closed loop recovers SrTiO3")
def test_clean_srtio3_001_retrieves_a_cubic_perovskite_001_in_the_top_3(retriever, sim):
    assert _perovskite_001_ranks(retriever, sim, 3)


def _rotated_queries(retriever, sim):
    entry = next(e for e in load_library(split="test") if e.id == "Si-diamond")  # never trained on
    embs = [retriever.embed_image(clean_image(sim, entry.id, (1, 1, 0), rotation=r), 0.12)
            for r in (0.0, 33.0, 90.0, 151.0)]
    return np.array(embs), [retriever.index.search(e, 1)[0] for e in embs]


def test_query_is_nearly_invariant_under_in_plane_rotation(retriever, sim):
    embs, tops = _rotated_queries(retriever, sim)
    # the shipped encoder gives 0.944 at worst over these four angles (its predecessor > 0.95)
    assert (embs @ embs.T).min() > 0.93
    assert {t.zone_label for t in tops} == {"[110]"}


@pytest.mark.xfail(strict=True, reason="issue #4 target: top-1 flips between look-alike [110] templates "
                                       "(diamond/zincblende) with the shipped, undertrained encoder")
def test_top1_is_invariant_under_in_plane_rotation(retriever, sim):
    _, tops = _rotated_queries(retriever, sim)
    assert len({(t.template_id, t.zone_label) for t in tops}) == 1


def _unknown_scale_candidates(retriever, sim):
    from model.pipeline import Options

    img = clean_image(sim, "SrTiO3-perovskite", (0, 0, 1), rotation=5.0, pixel_size=0.1)
    return retriever.query(img, None, k=Options().top_k)


def test_unknown_pixel_size_queries_a_ladder_of_scales(retriever, sim):
    from model.retrieval import UNKNOWN_PIXEL_LADDER

    cands = _unknown_scale_candidates(retriever, sim)
    assert len(cands) == 10 and all(c.pixel_size in UNKNOWN_PIXEL_LADDER for c in cands)
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)


def test_unknown_pixel_size_lattice_candidates_imply_the_scale(retriever, sim):
    """Without a pixel size (lattice in pixels) a lattice candidate comes at the pixel size its closest
    detectable lattice implies; for SrTiO3 [001] that is the true 0.1 Å."""
    from model.lattice import fit_lattice, lattice_metric
    from model.retrieval import lattice_mismatch

    img = clean_image(sim, "SrTiO3-perovskite", (0, 0, 1), rotation=5.0, pixel_size=0.1)
    cols = Denoiser.from_checkpoint()(img, 0.1).columns
    lattice = fit_lattice(np.stack([cols.x_px, cols.y_px], 1), img, 1.0)
    measured = lattice_metric(lattice.vectors)
    index = retriever.index
    row = {(r["template_id"], tuple(r["zone_axis"])): i for i, r in enumerate(index.records)}

    def implied(i):
        each = lattice_mismatch(measured, index.lattices[i:i + 1], scale_known=False, per_lattice=True)[0]
        return index.lattices[i, each.argmin(), 0] / measured[0], each.min()

    cands = retriever.query(img, None, k=3, lattice=lattice, lattice_k=10)
    extra = [c for c in cands if c.source == "lattice"]
    assert len(extra) == 10
    for c in extra:
        px, mis = implied(row[c.template_id, tuple(c.zone_axis)])
        assert c.pixel_size == pytest.approx(px) and c.lattice_mismatch == pytest.approx(mis)
    assert implied(row["SrTiO3-perovskite", (1, 0, 0)])[0] == pytest.approx(0.1, rel=0.01)


def test_a_pixel_size_estimate_keeps_retrieval_inside_its_window(retriever, sim):
    """Without a pixel size, an estimate (model.pixel_size) at the true 0.1 Å keeps every candidate's implied
    pixel size inside its window and still finds SrTiO3 [100] at its scale; one at twice the scale retrieves
    nothing at the true scale."""
    from model.lattice import fit_lattice
    from model.pixel_size import PixelSizeEstimate

    img = clean_image(sim, "SrTiO3-perovskite", (0, 0, 1), rotation=5.0, pixel_size=0.1)
    cols = Denoiser.from_checkpoint()(img, 0.1).columns
    lattice = fit_lattice(np.stack([cols.x_px, cols.y_px], 1), img, 1.0)
    for value in (0.1, 0.2):
        est = PixelSizeEstimate(value, 0.16, 3.0, 50)
        lo, hi = est.window()
        cands = retriever.query(img, None, k=10, lattice=lattice, lattice_k=40, pixel_prior=est)
        assert len(cands) > 10 and all(lo <= c.pixel_size <= hi for c in cands)
        assert lo > 0.1 or any(c.template_id == "SrTiO3-perovskite" and c.zone_label == "[100]"
                               and c.pixel_size == pytest.approx(0.1, rel=0.02) for c in cands)


def test_a_pixel_size_estimate_picks_the_lattice_of_its_scale_among_those_of_one_shape():
    """Two hexagonal lattices of one template, √3 apart: the shape alone takes the first that fits best,
    the estimate the one whose implied pixel size is nearest it."""
    from model.pixel_size import PixelSizeEstimate
    from model.retrieval import fitting_lattices

    table = np.array([[[3.0, 3.0, 0.5], [3.0 * 3 ** 0.5, 3.0 * 3 ** 0.5, 0.5]]])
    measured = np.array([30.0, 30.3, 0.5])  # px: a hexagonal lattice, 1 % off in shape
    mis, implied = fitting_lattices(measured, table, False)
    assert implied == pytest.approx([0.1]) and mis == pytest.approx([0.01], abs=1e-3)
    for value, want in ((0.1, 0.1), (0.17, 0.1 * 3 ** 0.5)):
        mis, implied = fitting_lattices(measured, table, False, pixel_prior=PixelSizeEstimate(value, 0.2, 3.0, 50))
        assert implied == pytest.approx([want]) and mis == pytest.approx([0.01], abs=1e-3)
    assert fitting_lattices(np.array([3.0, 3.0, 0.5]), table, True)[1] is None


def test_unknown_pixel_size_still_finds_the_crystal(retriever, sim):
    cands = _unknown_scale_candidates(retriever, sim)
    assert any(c.prototype == "perovskite" and c.zone_label == "[100]" for c in cands)


def test_train_cli_fits_and_exports_checkpoint_and_index(tmp_path):
    """`python train.py fit --config configs/retrieval.yaml` end to end on a tiny dataset built on demand."""
    data_cfg = tmp_path / "data.yaml"
    data_cfg.write_text(yaml.safe_dump({
        "splits": {"train": 8, "val": 4}, "image_size": 64, "thicknesses": [20.0], "shard_size": 8,
        "cache_dir": ".cache/repeats", "include_monolayers": False, "simulation": {"method": "convolution"},
        "conditions": {"pixel_size": [0.15, 0.2], "dose": [1e4, 1e5]}, "dask": {"workers": 1}}))
    export, index = tmp_path / "r.pt", tmp_path / "idx.npz"
    import train

    train.main(["fit", "--config", "configs/retrieval.yaml", f"--data.path={tmp_path / 'ds'}",
                f"--data.data_config={data_cfg}", "--data.batch_size=4", "--model.negatives=8",
                "--model.graph_hidden=16", "--model.embed_dim=16", f"--model.export_path={export}",
                f"--model.index_path={index}", "--trainer.max_epochs=1",
                f"--trainer.default_root_dir={tmp_path / 'runs'}", "--trainer.logger=CSVLogger",
                f"--trainer.logger.save_dir={tmp_path / 'runs'}", "--trainer.enable_progress_bar=false"])
    r = Retriever.from_checkpoint(export, index)
    assert r.model.config.embed_dim == 16 and len(r.index) == len(TemplateIndex.load(index).records)
    assert r.index.meta["checkpoint_sha256"] == file_hash(export)
    # the cached views were computed in one process; split over two workers they are the same views
    from model.contrastive import compute_views

    serial, keys = compute_views(tmp_path / "ds", "train", "checkpoints/denoiser.pt")
    for f in (tmp_path / "ds").glob("views_train_*"):
        f.unlink()
    parallel, keys2 = compute_views(tmp_path / "ds", "train", "checkpoints/denoiser.pt", workers=2)
    # not bit-equal: a worker runs torch on one thread, which sums in another order
    assert keys2 == keys and np.abs(serial).max() > 1
    np.testing.assert_allclose(parallel.astype(np.float32), serial.astype(np.float32), rtol=0.01, atol=0.01)
