"""Build a simulated STEM dataset and write it with Hugging Face ``datasets`` (``save_to_disk``).

    python -m data.build --config configs/data.yaml [--set splits.train=1000 ...] [--address tcp://host:8786]

Work is cut into shards (``shard_size`` samples each); every shard is saved on its own as soon as
it is done, so an interrupted build resumes where it stopped. Shards run in parallel on a
``dask.distributed`` cluster: a local one by default, or any running scheduler by address
(launch one on SLURM/Kubernetes with dask-jobqueue / dask-kubernetes). Each sample's random
stream depends only on (seed, split, index), so the same config gives the same dataset.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from data.config import ConfigError, DataConfig, load_config, to_dict

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def features(size: int):
    from datasets import Array2D, Features, Sequence, Value

    f32, img = Value("float32"), Array2D((size, size), "float32")
    return Features({
        "noisy": img, "clean": img, "heatmap": img,
        "columns_x_px": Sequence(f32), "columns_y_px": Sequence(f32),
        "columns_x_A": Sequence(f32), "columns_y_A": Sequence(f32),
        "columns_element": Sequence(Value("string")), "columns_Z": Sequence(Value("int32")),
        "columns_composition": Sequence(Value("string")), "columns_occupancy": Sequence(f32),
        "columns_z_weight": Sequence(f32), "columns_visible": Sequence(Value("bool")),
        "signal": Value("string"), "pixel_size": f32, "dose": f32, "thickness": f32, "rotation": f32,
        "noise": {k: f32 for k in ("dose", "source_size", "gain", "offset", "read_noise", "background")},
        "geometry": {"offset": Sequence(f32), "drift": Sequence(f32), "jitter": f32},
        "template_id": Value("string"), "formula": Value("string"), "prototype": Value("string"),
        "kind": Value("string"), "spacegroup": Value("string"), "zone_axis": Sequence(Value("int32")),
        "zone_label": Value("string"), "method": Value("string"), "split": Value("string"),
        "microscope": {k: f32 for k in ("energy", "semiangle", "defocus", "Cs", "haadf_inner", "haadf_outer")},
        "index": Value("int64"),
    })


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def candidates(cfg: DataConfig, split: str) -> list[tuple]:
    """(entry, zone axis) pairs of a split; the sampler draws uniformly from them."""
    from data.library import LIBRARY_FILE, zone_axis_pairs

    return zone_axis_pairs(split, cfg.library or LIBRARY_FILE, None if cfg.include_monolayers else "bulk")


def make_record(cfg: DataConfig, split: str, index: int, pairs: list[tuple], simulators: list) -> dict:
    from data.noise import draw_conditions
    from data.sample import make_sample

    rng = sample_rng(cfg.seed, split, index)
    if cfg.monolayer_fraction is not None:  # draws one number more, so only such configs change
        want = "monolayer" if rng.random() < cfg.monolayer_fraction else "bulk"
        pairs = [p for p in pairs if p[0].kind == want]
    entry, za = pairs[int(rng.integers(len(pairs)))]
    thickness = float(rng.choice(cfg.thicknesses))
    # one instrument draws nothing, so single-microscope datasets stay as they were
    simulator = simulators[int(rng.integers(len(simulators)))] if len(simulators) > 1 else simulators[0]
    repeat = simulator.simulate(entry.structure, za["uvw"], thickness)
    mic = simulator.microscope
    shape = (cfg.image_size, cfg.image_size)
    conditions = draw_conditions(rng, cfg.conditions, shape, repeat.cell)
    sample = make_sample(repeat, conditions, rng, cfg.signal, cfg.heatmap_sigma, cfg.heatmap_min_weight)
    return sample.record() | {
        "template_id": entry.id, "formula": entry.reduced_formula, "prototype": entry.prototype,
        "kind": entry.kind, "spacegroup": entry.spacegroup, "zone_axis": list(za["uvw"]),
        "zone_label": za["label"], "method": repeat.method, "split": split, "index": index,
        "microscope": {"energy": mic.energy, "semiangle": mic.semiangle, "defocus": mic.defocus, "Cs": mic.Cs,
                       "haadf_inner": mic.haadf[0], "haadf_outer": mic.haadf[1]}}


def build_shard(cfg_dict: dict, split: str, shard: int, shard_dir: str) -> dict:
    """Write one shard (runs on a dask worker); returns its timing."""
    import dask
    from datasets import Dataset, disable_progress_bars

    from data.config import _build
    from data.simulate import Simulator

    warnings.filterwarnings("ignore")
    disable_progress_bars()  # one bar for the whole build, not one per shard
    cfg = _build(DataConfig, cfg_dict, "")
    out = Path(shard_dir) / f"{split}-{shard:05d}"
    n = int(cfg.splits[split])
    lo, hi = shard * cfg.shard_size, min((shard + 1) * cfg.shard_size, n)
    if out.exists():
        return {"split": split, "shard": shard, "samples": 0, "seconds": 0.0, "skipped": True}
    t0 = time.perf_counter()
    simulators = [Simulator(m, cfg.simulation, cfg.cache_dir) for m in cfg.instruments]
    pairs = candidates(cfg, split)
    # abTEM computes through dask; inside a worker it must not submit to the cluster again
    with dask.config.set(scheduler="synchronous"):
        rows = [make_record(cfg, split, i, pairs, simulators) for i in range(lo, hi)]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    Dataset.from_list(rows, features=features(cfg.image_size)).save_to_disk(str(tmp))
    tmp.rename(out)
    return {"split": split, "shard": shard, "samples": hi - lo, "seconds": time.perf_counter() - t0, "skipped": False}


def build(cfg: DataConfig, progress: bool = True) -> Path:
    from datasets import DatasetDict, concatenate_datasets, load_from_disk
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    for split in cfg.splits:
        if cfg.splits[split] and not candidates(cfg, split):
            raise ConfigError(f"split {split!r} has no library entries to sample from")
        f = cfg.monolayer_fraction
        kinds = {e.kind for e, _ in candidates(cfg, split)}
        for kind, wanted in (("monolayer", f is not None and f > 0), ("bulk", f is not None and f < 1)):
            if cfg.splits[split] and wanted and kind not in kinds:
                raise ConfigError(f"split {split!r} has no {kind} entries for monolayer_fraction {f}")
    out = Path(cfg.output)
    shard_dir = out.parent / f".{out.name}-shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    cfg_dict = to_dict(cfg)
    fingerprint = json.dumps(cfg_dict, sort_keys=True, default=str)
    stamp = shard_dir / "config.json"
    if stamp.exists() and stamp.read_text() != fingerprint:
        raise ConfigError(f"{shard_dir} holds shards of a different config; delete it or restore that config")
    stamp.write_text(fingerprint)
    tasks = [(s, k) for s, n in cfg.splits.items() for k in range(-(-int(n) // cfg.shard_size))]
    t0 = time.perf_counter()
    if cfg.dask.address:
        client, cluster = Client(cfg.dask.address), None
    else:
        cluster = LocalCluster(n_workers=cfg.dask.workers, threads_per_worker=cfg.dask.threads_per_worker,
                               processes=cfg.dask.workers > 1, dashboard_address=None)
        client = Client(cluster)
    stats = []
    try:
        futures = [client.submit(build_shard, cfg_dict, s, k, str(shard_dir), pure=False) for s, k in tasks]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="shards", disable=not progress):
            stats.append(fut.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    wall = time.perf_counter() - t0
    splits = {}
    for split, n in cfg.splits.items():
        parts = [load_from_disk(str(shard_dir / f"{split}-{k:05d}")) for k in range(-(-int(n) // cfg.shard_size))]
        if parts:
            splits[split] = concatenate_datasets(parts)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    from datasets import disable_progress_bars

    disable_progress_bars()
    DatasetDict(splits).save_to_disk(str(tmp))
    built = sum(s["samples"] for s in stats)
    info = {"config": cfg_dict, "samples": {k: len(v) for k, v in splits.items()},
            "built_now": built, "wall_seconds": round(wall, 2),
            "images_per_second": round(built / wall, 3) if built else None,
            "workers": cfg.dask.address or cfg.dask.workers}
    (tmp / "build_info.json").write_text(json.dumps(info, indent=1, default=str))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    shutil.rmtree(shard_dir)
    return out


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data.build", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/data.yaml", help="YAML config (default: %(default)s)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set splits.train=1000")
    ap.add_argument("--address", help="dask.distributed scheduler address (default: a local cluster)")
    ap.add_argument("--output", help="output folder (overrides the config)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        overrides = _parse_set(args.set)
        if args.address:
            overrides["dask.address"] = args.address
        if args.output:
            overrides["output"] = args.output
        cfg = load_config(args.config, overrides)
        out = build(cfg, progress=not args.quiet)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = json.loads((out / "build_info.json").read_text())
    print(f"wrote {out}: {info['samples']} samples, {info['images_per_second']} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
