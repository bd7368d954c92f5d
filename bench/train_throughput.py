"""Training throughput (samples/s) of the denoiser and retrieval stages, per precision.

    python bench/train_throughput.py --denoiser-data runs/smoke/datasets/denoiser \
        --retrieval-data runs/smoke/datasets/retrieval [--precision 32-true bf16-mixed] [--steps 40]

Runs the stage's own Lightning config (configs/denoiser.yaml, configs/retrieval.yaml) through the
project's CLI with validation, logging and checkpointing off, and times optimizer steps after a
warm-up (CUDA synchronised). On a GPU it samples utilisation (NVML) during the timed steps.
Writes bench/results/train_throughput_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml

from model.training import make_cli

CONFIGS = {"denoiser": "configs/denoiser.yaml", "retrieval": "configs/retrieval.yaml"}


class StepTimer(pl.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.times, self.batch = warmup, [], None
        self._t0, self.util, self._stop = None, [], threading.Event()

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._sync()
        self._t0 = time.perf_counter()
        if trainer.global_step == self.warmup and torch.cuda.is_available():
            threading.Thread(target=self._sample_util, daemon=True).start()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._sync()
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._t0)
            self.batch = len(batch[1]) if isinstance(batch, (list, tuple)) else len(batch["noisy"])

    def on_train_end(self, trainer, module):
        self._stop.set()

    def _sample_util(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            while not self._stop.wait(0.05):
                self.util.append(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
        except Exception:  # noqa: BLE001 - utilisation is a nice-to-have, never fails the benchmark
            pass


def measure(stage: str, data: str, precision: str, steps: int, warmup: int, batch_size: int | None,
            workers: int | None) -> dict:
    cfg = yaml.safe_load(Path(CONFIGS[stage]).read_text())
    cfg["trainer"].update(logger=False, callbacks=[], enable_checkpointing=False, limit_val_batches=0,
                          num_sanity_val_steps=0, max_steps=steps + warmup, max_epochs=10_000, precision=precision,
                          enable_progress_bar=False, enable_model_summary=False)
    model, dm = cfg["model"]["init_args"], cfg["data"]["init_args"]
    model["export_path"] = None
    model.pop("index_path", None)
    dm["path"], dm["data_config"] = data, None
    if batch_size:
        dm["batch_size"] = batch_size
    if workers is not None:
        dm["num_workers"] = workers
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "config.yaml"
        f.write_text(yaml.safe_dump(cfg))
        cli = make_cli(["--config", str(f), "--trainer.default_root_dir", tmp], run=False)
        timer = StepTimer(warmup)
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    t = timer.times
    if not t:
        raise SystemExit(f"{stage}: no timed steps; does {data} hold more than one batch of training samples?")
    per_step = sum(t) / len(t)
    return {"stage": stage, "precision": precision, "batch_size": timer.batch, "timed_steps": len(t),
            "seconds_per_step": round(per_step, 4), "samples_per_second": round(timer.batch / per_step, 1),
            "gpu_utilisation_percent": round(sum(timer.util) / len(timer.util), 1) if timer.util else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--denoiser-data", required=True)
    ap.add_argument("--retrieval-data", required=True)
    ap.add_argument("--precision", nargs="+", default=None, help="default: 32-true, plus bf16-mixed on a GPU")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, help="override the configs' batch sizes")
    ap.add_argument("--workers", type=int, help="override the configs' data-loader workers")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available()
    precisions = args.precision or (["32-true", "bf16-mixed"] if gpu else ["32-true"])
    device = torch.cuda.get_device_name(0) if gpu else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for stage, data in (("denoiser", args.denoiser_data), ("retrieval", args.retrieval_data)):
        for p in precisions:
            row = measure(stage, data, p, args.steps, args.warmup, args.batch_size, args.workers)
            print(json.dumps(row), flush=True)
            rows.append(row)
    for stage in CONFIGS:
        base = next((r for r in rows if r["stage"] == stage and r["precision"] == "32-true"), None)
        for r in rows:
            if base and r["stage"] == stage:
                r["speedup_vs_fp32"] = round(r["samples_per_second"] / base["samples_per_second"], 2)
    out = Path(args.out or f"bench/results/train_throughput_{'gpu' if gpu else 'cpu'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "torch": torch.__version__, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
