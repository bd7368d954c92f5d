"""`python train.py`: the smoke recipe end to end, resume, provenance, and config typos caught first."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import infer
import train
from model.recipe import INSTALLED, RecipeError, install, load_recipe, parse_overrides

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "srtio3_001.tif"


def train_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "train.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "WANDB_MODE": "offline"})


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    t0 = time.perf_counter()
    r = train_cli("--smoke", "--run-dir", run_dir, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir, time.perf_counter() - t0


def test_smoke_recipe_trains_every_stage_and_records_provenance(smoke):
    run_dir, seconds = smoke
    assert seconds < 600  # the budget for 2 CPU cores
    ckpts = run_dir / "checkpoints"
    for name in INSTALLED:
        assert (ckpts / name).is_file(), name
    prov = json.loads((ckpts / "provenance.json").read_text())
    assert len(prov["git"]["commit"]) == 40 and prov["versions"]["torch"] == str(torch.__version__)
    assert len(prov["library_sha256"]) == 16
    for stage in ("denoiser", "retrieval"):
        done = json.loads((run_dir / stage / "done.json").read_text())
        assert done["global_step"] > 0 and done["resumed_from"] is None
        assert "val/loss" in done["val"] and np.isfinite(done["val"]["val/loss"])
        assert len(done["dataset"]["digest"]) == 16 and set(done["dataset"]["splits"]) == {"train", "val"}
        assert (run_dir / stage / "config.yaml").is_file()  # the resolved config beside the weights
        meta = json.loads((ckpts / f"{stage}.json").read_text())
        assert meta["dataset_fingerprint"]["digest"] == done["dataset"]["digest"]
        assert meta["git"]["commit"] == prov["git"]["commit"]
    # the retrieval views came from the denoiser this run trained, not the installed one
    cfg = (run_dir / "retrieval" / "config.yaml").read_text()
    assert str(ckpts / "denoiser.pt") in cfg
    index = json.loads((run_dir / "index" / "done.json").read_text())
    assert index["entries"] == index["library_pairs"] > 1000 and index["unit_norm"]


def test_smoke_run_logs_one_wandb_run_per_stage_with_sample_images(smoke):
    run_dir, _ = smoke
    for stage, key in (("denoiser", "val/samples"), ("retrieval", "val/queries")):
        runs = list((run_dir / stage / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, stage
        media = list(runs[0].glob("files/media/images/**/*.png"))
        assert media, f"{stage}: no sample images logged"
        summary = (runs[0] / "files" / "wandb-summary.json")
        if summary.is_file():
            assert key in json.loads(summary.read_text())


def test_smoke_checkpoints_load_in_infer(smoke, tmp_path):
    ckpts = smoke[0] / "checkpoints"
    rc = infer.main([str(EXAMPLE), "--out", str(tmp_path), "--potential", "none", "--quiet",
                     "--denoiser", str(ckpts / "denoiser.pt"), "--retrieval", str(ckpts / "retrieval.pt"),
                     "--index", str(ckpts / "template_index.npz")])
    # an undertrained smoke model may well refuse the image (3); it must load and run (not 1 or 2)
    assert rc in (0, 3)
    report = json.loads((tmp_path / EXAMPLE.stem / "report.json").read_text())
    assert report["timings"]["denoise"] > 0


def test_rerun_skips_finished_stages_and_a_stopped_stage_resumes(smoke):
    run_dir, _ = smoke
    first = json.loads((run_dir / "denoiser" / "done.json").read_text())
    # a stage that did not finish has no done.json: take it away and give the stage a longer horizon
    (run_dir / "denoiser" / "done.json").unlink()
    r = train_cli("--smoke", "--run-dir", run_dir, "--quiet", "denoiser", "retrieval",
                  "--set", "denoiser.trainer.max_epochs=2")
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((run_dir / "denoiser" / "done.json").read_text())
    assert again["resumed_from"].endswith("last.ckpt")
    assert again["global_step"] == 2 * first["global_step"]  # counted on, not restarted
    assert "[retrieval] done already" in r.stdout


def test_config_typos_fail_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    t0 = time.perf_counter()
    r = train_cli("--smoke", "--run-dir", run_dir, "--set", "denoiser.trainer.max_epoch=3", timeout=300)
    assert r.returncode == 2
    assert "max_epoch" in r.stderr.strip().splitlines()[-1]
    assert not run_dir.exists() and time.perf_counter() - t0 < 120
    r = train_cli("--smoke", "--run-dir", run_dir, "--data-set", "retrieval.splitz.train=3", timeout=300)
    assert r.returncode == 2 and "splitz" in r.stderr.strip().splitlines()[-1]
    assert not run_dir.exists()


def test_recipe_files_are_checked_strictly(tmp_path):
    for name in ("recipe.yaml", "recipe_smoke.yaml", "recipe_gpu.yaml"):
        assert load_recipe(ROOT / "configs" / name).stages == ["data", "denoiser", "retrieval", "index"]
    bad = tmp_path / "r.yaml"
    bad.write_text((ROOT / "configs" / "recipe_smoke.yaml").read_text().replace("run_root:", "run_rot:"))
    with pytest.raises(RecipeError, match="run_rot"):
        load_recipe(bad)
    bad.write_text((ROOT / "configs" / "recipe_smoke.yaml").read_text().replace("stages: [data,", "stages: [dta,"))
    with pytest.raises(RecipeError, match="dta"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="STAGE.KEY=VALUE"):
        parse_overrides(["trainer.max_epochs"], "--set")
    with pytest.raises(RecipeError, match="stage must be"):
        parse_overrides(["index.x=1"], "--set")
    assert parse_overrides(["retrieval.trainer.max_epochs=20"], "--set") == [("retrieval", "trainer.max_epochs", 20)]
    assert train.main(["nonsense-stage"]) == 2


def test_install_copies_only_what_the_run_made(tmp_path):
    run_dir, target = tmp_path / "run", tmp_path / "ckpt"
    (run_dir / "checkpoints").mkdir(parents=True)
    target.mkdir()
    (run_dir / "checkpoints" / "template_index.npz").write_bytes(b"new")
    (target / "denoiser.pt").write_bytes(b"old")
    assert install(run_dir, target) == ["template_index.npz"]
    assert (target / "template_index.npz").read_bytes() == b"new" and (target / "denoiser.pt").read_bytes() == b"old"
    assert not list(target.glob(".*.tmp"))


def test_a_fine_tune_starts_from_the_pinned_checkpoint_or_stops(tmp_path):
    import hashlib

    from model.denoiser import CheckpointError, Denoiser
    from model.training import DenoiserModule

    shipped = ROOT / "checkpoints" / "denoiser.pt"
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()
    arch = Denoiser.from_checkpoint(shipped).model.config.to_dict()
    kw = {k: arch[k] for k in ("encoder", "out_indices", "decoder_channels", "stem_channels")}
    module = DenoiserModule(**kw, init_from=str(shipped), init_sha256=digest)
    parent = Denoiser.from_checkpoint(shipped).model.state_dict()
    assert all(torch.equal(v, parent[k]) for k, v in module.net.state_dict().items())
    assert module.init_record == {"path": str(shipped), "sha256": digest}
    with pytest.raises(CheckpointError, match="sha256"):
        DenoiserModule(**kw, init_from=str(shipped), init_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="architecture"):
        DenoiserModule(**{**kw, "stem_channels": kw["stem_channels"] * 2}, init_from=str(shipped))
    with pytest.raises(CheckpointError, match="not found"):
        DenoiserModule(**kw, init_from=str(tmp_path / "none.pt"))
