"""The denoiser: architecture, column extraction, tiling, checkpoints, a few seconds of real training."""
import numpy as np
import pytest
import torch

from data.library import load_library
from data.noise import Conditions, NoiseModel
from data.sample import make_sample
from data.scan import ScanGeometry
from data.simulate import Simulator
from model.columns import extract_columns, inside, match_columns
from model.denoiser import DEFAULT_CHECKPOINT, CheckpointError, Denoiser, SmoothingDenoiser
from model.training import DenoiserModule, dihedral
from model.unet import create_model


def test_unet_shapes_and_registry():
    net = create_model("unet", encoder="resnet18d", decoder_channels=[32, 24, 16, 16], stem_channels=8)
    den, heat = net(torch.zeros(2, 1, 64, 96))
    assert den.shape == (2, 1, 64, 96) and heat.shape == (2, 1, 64, 96)
    assert net.stride == 16
    with pytest.raises(KeyError):
        create_model("vit-huge")


def test_column_extraction_is_subpixel_and_metrics_count():
    yy, xx = np.mgrid[0:64, 0:64]
    truth = np.array([[10.3, 12.7], [40.6, 20.2], [30.1, 50.9]])
    hm = np.max([np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0 ** 2)) for x, y in truth], axis=0)
    cols = extract_columns(hm, hm, pixel_size=0.1, refine_radius=0.3)
    s = match_columns(cols.xy, truth * 0.1, radius=0.5)
    assert s.f1 == 1.0 and s.rmse < 0.005  # < 0.5 pm
    s = match_columns(cols.xy[:2], truth * 0.1)
    assert s.precision == 1.0 and s.recall == pytest.approx(2 / 3)
    cols.intensity = np.array([10.0, 2.0, 9.0])  # two heavy columns, one light
    assert cols.classify().tolist() == [1, 0, 1]
    cols.intensity = np.array([10.0, 9.5, 9.0])  # no contrast: one class
    assert cols.classify().tolist() == [1, 1, 1]
    # a window keeps the columns inside it, in its own pixel frame
    win = cols.window(15, 20, 30, 40)  # rows 15-45, cols 20-60: only the column at (40.6, 20.2)
    k = int(np.argmin(np.abs(cols.x_px - 40.6)))
    assert len(win) == 1 and win.x_px[0] == pytest.approx(40.6 - 20, abs=0.05)
    assert win.y_px[0] == pytest.approx(20.2 - 15, abs=0.05) and win.intensity[0] == cols.intensity[k]


def test_dihedral_group_has_eight_distinct_elements():
    x = torch.arange(9.0).reshape(3, 3)
    assert len({tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}) == 8


def test_missing_and_corrupt_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Denoiser.from_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        Denoiser.from_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(CheckpointError, match="not a stem2struct"):
        Denoiser.from_checkpoint(other)


@pytest.fixture(scope="module")
def tiny_batch():
    """Real data-engine samples of two training materials."""
    lib = {e.id: e for e in load_library(split="train")}
    sim = Simulator()
    samples = []
    for k, entry in enumerate(list(lib.values())[:4]):
        rep = sim.simulate(entry.structure, entry.zone_axes[0]["uvw"], 40.0)
        cond = Conditions(ScanGeometry((64, 64), 0.1, rotation=15.0 * k), NoiseModel(dose=1e4))
        samples.append(make_sample(rep, cond, np.random.default_rng(k)))
    return {"noisy": torch.tensor(np.stack([s.noisy for s in samples])),
            "clean": torch.tensor(np.stack([s.clean for s in samples])),
            "heatmap": torch.tensor(np.stack([s.heatmap for s in samples]))}


def test_a_few_seconds_of_training_lower_the_loss(tiny_batch):
    torch.manual_seed(0)
    module = DenoiserModule(decoder_channels=(32, 24, 16, 16), stem_channels=8)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = module._loss(tiny_batch, augment=False)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])


def test_tiling_matches_a_single_pass():
    torch.manual_seed(0)
    den = Denoiser(create_model("unet", decoder_channels=[32, 24, 16, 16], stem_channels=8), tile=128, overlap=32)
    img = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)
    d1, h1 = den.predict_normalized(img, tile=256)  # the whole image at once
    d2, h2 = den.predict_normalized(img, tile=128)  # 3 x 3 blended tiles
    # an untrained net has the full receptive field at its tile borders: agreement is loose there and
    # exact far from them; trained nets are checked in the shipped-checkpoint test
    centre = (slice(112, 144), slice(112, 144))
    assert np.abs(d1 - d2)[centre].max() < 0.02 * np.abs(d1).max()
    assert np.corrcoef(d1.ravel(), d2.ravel())[0, 1] > 0.98


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="no shipped denoiser checkpoint yet")
def test_shipped_checkpoint_finds_columns_on_unseen_material():
    den = Denoiser.from_checkpoint()
    entry = next(e for e in load_library(split="test") if e.id == "Si-diamond")  # never trained on
    rep = Simulator().simulate(entry.structure, (1, 1, 0), 60.0)  # the 1.36 Å dumbbells
    g = ScanGeometry((256, 256), 0.1, rotation=23.0, offset=(0.3, 0.7))
    s = make_sample(rep, Conditions(g, NoiseModel(dose=1e4, gain=2.0, offset=20.0)), np.random.default_rng(5))
    result = den(s.noisy, 0.1)
    truth = np.stack([s.columns.x_A, s.columns.y_A], 1)  # single element: every column is visible
    inner = lambda xy: inside(xy, (25.6, 25.6), edge=1.0)  # noqa: E731  edge columns are cut
    score = match_columns(inner(result.columns.xy), inner(truth))
    assert score.f1 >= 0.95
    # tiled and single-pass inference agree on the columns of a trained net
    tiled = den(s.noisy, 0.1, tile=128)
    again = match_columns(inner(tiled.columns.xy), inner(result.columns.xy), radius=0.05)
    assert again.f1 >= 0.99


def test_smoothing_stand_in_finds_clean_columns_and_is_beaten_by_the_network_at_low_dose():
    # the no-denoiser ablation: a fair classical detector on a clean image, worse than the
    # trained network once noise dominates
    entry = next(e for e in load_library(split="test") if e.id == "Si-diamond")
    rep = Simulator().simulate(entry.structure, (1, 1, 0), 60.0)
    g = ScanGeometry((256, 256), 0.1, rotation=23.0, offset=(0.3, 0.7))
    inner = lambda xy: inside(xy, (25.6, 25.6), edge=1.0)  # noqa: E731
    f1, net = {}, []
    for dose, seed in ((1e6, 5), (3e2, 5), (3e2, 6)):
        s = make_sample(rep, Conditions(g, NoiseModel(dose=dose, gain=2.0, offset=20.0)), np.random.default_rng(seed))
        truth = inner(np.stack([s.columns.x_A, s.columns.y_A], 1))
        smooth = SmoothingDenoiser()(s.noisy, 0.1)
        assert smooth.denoised.shape == s.noisy.shape and smooth.working_pixel_size == 0.1
        f1.setdefault(dose, []).append(match_columns(inner(smooth.columns.xy), truth).f1)
        if dose < 1e6:
            net.append(match_columns(inner(Denoiser.from_checkpoint()(s.noisy, 0.1).columns.xy), truth).f1)
    assert f1[1e6][0] >= 0.95
    # measured, two noise draws at 300 e/Å²: 0.73 vs 0.63. On the per-atom object the Si dumbbells are
    # easy for the Gaussian too (0.90 vs 0.94 at 500 e/Å², where the summed object gave 0.70 vs 0.85);
    # the pipeline benchmark's pooled column F1 keeps a wide gap (0.74 vs 0.90)
    assert np.mean(net) > np.mean(f1[3e2]) + 0.05


def test_train_cli_fits_and_exports_a_loadable_checkpoint(tmp_path):
    """`python train.py fit` end to end on a tiny dataset the data engine builds on demand."""
    import yaml

    data_cfg = tmp_path / "data.yaml"
    data_cfg.write_text(yaml.safe_dump({"splits": {"train": 8, "val": 2}, "image_size": 64, "thicknesses": [20.0],
                                        "shard_size": 8, "cache_dir": str(tmp_path / "cache"), "dask": {"workers": 1}}))
    export = tmp_path / "den.pt"
    import train

    train.main(["fit", "--config", "configs/denoiser.yaml", f"--data.path={tmp_path / 'ds'}",
                f"--data.data_config={data_cfg}", "--data.batch_size=4", "--data.num_workers=0",
                "--model.decoder_channels=[16,16,16,8]", "--model.crop=null", f"--model.export_path={export}",
                "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path / 'runs'}",
                "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={tmp_path / 'runs'}",
                "--trainer.enable_progress_bar=false"])
    den = Denoiser.from_checkpoint(export)
    assert den.model.config.decoder_channels == (16, 16, 16, 8)
    assert den.meta["epochs"] == 1 and "val/f1" in den.meta["val_metrics_last_epoch"]


def test_columns_cut_by_the_border_are_dropped_so_the_lattice_keeps_its_scale():
    """A peak the border cuts has its centroid pulled inward; kept, a ring of them shrank the lattice
    fitted to a field. On a clean MgO [100] field every detection sits within 1 pm of a true column
    and the fitted scale is the true one within 2e-4."""
    from scipy.spatial import cKDTree

    from data.scan import column_labels, render
    from model.columns import image_as_heatmap

    mgo = next(e for e in load_library(split="test") if e.id == "MgO-rocksalt")
    rep = Simulator().simulate(mgo.structure, (1, 0, 0), 40.0)
    g = ScanGeometry((256, 256), 0.1, rotation=13.0, offset=(0.3, 0.2))
    img = render(rep, g)
    lab = column_labels(rep, g, min_visible_weight=0.12)
    truth = np.stack([lab.x_A[lab.visible], lab.y_A[lab.visible]], 1)
    xy = extract_columns(image_as_heatmap(img), img, 0.1, threshold=0.3).xy
    d, i = cKDTree(truth).query(xy)
    assert len(xy) > 100 and d.max() < 0.01
    fit, *_ = np.linalg.lstsq(np.c_[truth[i], np.ones(len(xy))], xy, rcond=None)
    assert abs(fit[0, 0] - 1) < 2e-4 and abs(fit[1, 1] - 1) < 2e-4


def test_the_benchmark_pairs_two_runs_only_on_the_same_images():
    import copy
    import json
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    paired = runpy.run_path(str(root / "bench" / "denoiser.py"))["paired"]
    a = json.loads((root / "bench/results/denoiser.json").read_text())
    b = copy.deepcopy(a)
    b["bins"]["1e+05"]["ours"]["psnr"] -= 0.26
    p = paired(a, b)["bins"]
    assert p["1e+05"]["images"] == len(a["bins"]["1e+05"]["images"]) > 0
    assert p["1e+05"]["psnr"]["b_minus_a"] == pytest.approx(-0.26) and p["1e+04"]["psnr"]["b_minus_a"] == 0
    # as a run before the monolayers' cross-sections did: other 1e5 images from the fifth on
    b["bins"]["1e+05"]["images"][4]["template_id"] += " (another draw)"
    with pytest.raises(ValueError, match="1e\\+05"):
        paired(a, b)
