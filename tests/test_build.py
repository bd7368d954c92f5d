"""The dataset builder: Hugging Face datasets on disk, material splits, resumable, deterministic, clear errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from data.build import main as build_main
from data.config import ConfigError, load_config
from data.library import load_library

TINY = {
    "seed": 3, "splits": {"train": 4, "val": 2, "test": 2}, "image_size": 64, "thicknesses": [20.0],
    "shard_size": 2, "dask": {"workers": 1},
    "conditions": {"pixel_size": [0.08, 0.12]},
}


def write_config(tmp_path, **extra):
    cfg = {**TINY, "output": str(tmp_path / "ds"), "cache_dir": str(tmp_path / "cache"), **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    assert build_main(["--config", str(write_config(tmp)), "--quiet"]) == 0
    from datasets import load_from_disk

    return tmp, load_from_disk(str(tmp / "ds"))


def test_dataset_has_splits_labels_and_metadata(built):
    _, dd = built
    assert {k: len(v) for k, v in dd.items()} == {"train": 4, "val": 2, "test": 2}
    row = dd["train"].with_format("numpy")[0]
    assert row["noisy"].shape == row["clean"].shape == row["heatmap"].shape == (64, 64)
    assert len(row["columns_x_px"]) == len(row["columns_Z"]) == len(row["columns_element"]) > 0
    np.testing.assert_allclose(row["columns_x_A"], row["columns_x_px"] * row["pixel_size"], rtol=1e-5)
    assert 0.08 <= row["pixel_size"] <= 0.12 and row["method"] == "convolution"
    assert len(row["zone_axis"]) == 3 and row["zone_label"].startswith("[")


def test_samples_come_from_their_own_material_split(built):
    _, dd = built
    split_of = {e.id: e.split for e in load_library()}
    for split, ds in dd.items():
        assert all(split_of[t] == split for t in ds["template_id"])


def test_build_is_deterministic_and_resumable(built, tmp_path):
    tmp, dd = built
    info = json.loads((tmp / "ds" / "build_info.json").read_text())
    assert info["samples"] == {"train": 4, "val": 2, "test": 2} and info["images_per_second"] > 0
    # a second build in a fresh folder (same seed, shared repeat cache) gives identical arrays
    cfg = write_config(tmp_path, cache_dir=str(tmp / "cache"))
    assert build_main(["--config", str(cfg), "--quiet"]) == 0
    from datasets import load_from_disk

    again = load_from_disk(str(tmp_path / "ds"))
    a, b = dd["val"].with_format("numpy"), again["val"].with_format("numpy")
    for k in range(len(a)):
        np.testing.assert_array_equal(a[k]["noisy"], b[k]["noisy"])
        assert a[k]["template_id"] == b[k]["template_id"]


def test_interrupted_build_resumes_from_finished_shards(tmp_path):
    from data.build import build_shard
    from data.config import to_dict

    cfg = load_config(write_config(tmp_path))
    shard_dir = tmp_path / ".ds-shards"
    first = build_shard(to_dict(cfg), "train", 0, str(shard_dir))
    assert first["samples"] == 2 and not first["skipped"]
    (shard_dir / "config.json").write_text(json.dumps(to_dict(cfg), sort_keys=True, default=str))
    assert build_main(["--config", str(write_config(tmp_path)), "--quiet"]) == 0
    info = json.loads((tmp_path / "ds" / "build_info.json").read_text())
    assert info["built_now"] == 6  # 8 samples, the finished shard of 2 was reused


@pytest.mark.parametrize("patch,message", [
    ({"splits": {"train": 2, "holdout": 1}}, "unknown split"),
    ({"bogus_key": 1}, "unknown key"),
    ({"conditions": {"dose": [1e4, 1e2]}}, "dose"),
    ({"simulation": {"method": "prism-ish"}}, "method"),
    ({"microscope": {"haadf": [70, 200]}, "simulation": {"sampling": 0.1}}, "exceeds"),
    ({"image_size": 16}, "image_size"),
    ({"monolayer_fraction": 1.5}, "monolayer_fraction"),
])
def test_bad_configs_fail_with_one_clear_line(tmp_path, patch, message):
    cfg = write_config(tmp_path, **patch)
    out = subprocess.run([sys.executable, "-m", "data.build", "--config", str(cfg), "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "ds").exists()


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_several_microscopes_randomise_detector_settings(tmp_path):
    mics = [{"energy": 200000.0, "semiangle": 21.0, "haadf": [70.0, 200.0]},
            {"energy": 300000.0, "semiangle": 25.0, "haadf": [50.0, 150.0], "defocus": 20.0}]
    cfg = write_config(tmp_path, microscopes=mics, splits={"train": 6})
    assert build_main(["--config", str(cfg), "--quiet"]) == 0
    from datasets import load_from_disk

    ds = load_from_disk(str(tmp_path / "ds"))["train"]
    energies = {round(m["energy"]) for m in ds["microscope"]}
    assert energies == {200000, 300000}
    with pytest.raises(ConfigError, match=r"microscopes\[0\]"):
        load_config(write_config(tmp_path, microscopes=[{"energy": -1}]))


def test_the_monolayer_fraction_sets_the_share_of_monolayer_samples(tmp_path):
    from data.build import candidates, make_record
    from data.simulate import Simulator

    for fraction, kinds in ((1.0, {"monolayer"}), (0.0, {"bulk"})):
        cfg = load_config(write_config(tmp_path, monolayer_fraction=fraction))
        pairs = candidates(cfg, "val")
        sims = [Simulator(m, cfg.simulation, cfg.cache_dir) for m in cfg.instruments]
        assert {make_record(cfg, "val", i, pairs, sims)["kind"] for i in range(3)} == kinds
    # unset, a sample draws uniformly over the split's pairs, as every earlier dataset did
    assert load_config(write_config(tmp_path)).monolayer_fraction is None
