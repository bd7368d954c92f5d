"""Lightning pieces: the CLI train.py runs, the denoiser's data module and module, export, media logging."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import warnings
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI
import numpy as np
import torch
import torch.nn.functional as F

from model.columns import extract_columns, match_columns
from model.denoiser import CHECKPOINT_FORMAT, normalize
from model.unet import UNet, UNetConfig

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def wandb_usable() -> bool:
    if os.environ.get("WANDB_MODE") == "disabled":
        return False
    import importlib.util

    return importlib.util.find_spec("wandb") is not None


class StemCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.set_defaults({"trainer.precision": "bf16-mixed" if torch.cuda.is_available() else "32-true"})


def _without_wandb(args: list[str]) -> list[str]:
    """The same arguments with every WandbLogger taken out of the --config files (or YAML texts).
    Without wandb the parser cannot even validate that logger, so this happens before parsing; the
    edited config goes back as YAML text, which --config takes as well as a path."""
    import yaml

    out, dropped = list(args), False
    for n, a in enumerate(args[:-1]):
        if a != "--config":
            continue
        src = Path(args[n + 1])
        cfg = yaml.safe_load(src.read_text() if src.is_file() else args[n + 1])
        loggers = (cfg.get("trainer") or {}).get("logger") if isinstance(cfg, dict) else None
        if isinstance(loggers, list):
            kept = [lg for lg in loggers if not str(lg.get("class_path", "")).endswith("WandbLogger")]
            if len(kept) < len(loggers):
                cfg["trainer"]["logger"] = kept or False
                out[n + 1], dropped = yaml.safe_dump(cfg, sort_keys=False), True
    if dropped:
        warnings.warn("wandb is not installed or WANDB_MODE=disabled: W&B logging is off, the CSV log remains",
                      stacklevel=2)
    return out


def make_cli(args: list[str], run: bool = True, **kwargs) -> StemCLI:
    """The one LightningCLI of the project (train.py fit …, and each stage of the recipe)."""
    # the recipe passes args while sys.argv holds its own flags; Lightning warns about exactly that
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
    if not wandb_usable():
        args = _without_wandb(args)
    return StemCLI(None, None, subclass_mode_model=True, subclass_mode_data=True, seed_everything_default=0,
                   save_config_kwargs={"overwrite": True}, args=args, run=run, **kwargs)


class StemDataModule(pl.LightningDataModule):
    """Noisy/clean/heatmap triples from a ``datasets`` folder written by ``data.build``.

    If the folder does not exist it is built first from ``data_config`` (the data engine is the
    only source of training data). Training applies the 8 symmetries of the square, which keep
    labels valid."""

    def __init__(self, path: str = "datasets/stem-train-atoms", data_config: str | None = "configs/data_train.yaml",
                 batch_size: int = 16, num_workers: int = 0, val_columns: int = 16):
        super().__init__()
        self.save_hyperparameters()
        self.path, self.data_config = path, data_config
        self.batch_size, self.num_workers = batch_size, num_workers

    def prepare_data(self):
        if Path(self.path).exists():
            return
        if not self.data_config:
            raise FileNotFoundError(f"dataset {self.path} not found and no data_config to build it from")
        from data.build import build
        from data.config import load_config

        build(load_config(self.data_config, {"output": self.path}))

    def setup(self, stage=None):
        from datasets import load_from_disk

        dd = load_from_disk(self.path)
        cols = ["noisy", "clean", "heatmap"]
        self.train_set = dd["train"].with_format("torch", columns=cols)
        self.val_set = dd["val"].with_format(
            "torch", columns=cols + ["columns_x_px", "columns_y_px", "columns_visible", "pixel_size"])

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                                           num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                                           pin_memory=torch.cuda.is_available())

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers,
                                           collate_fn=_collate_val)


def _collate_val(rows):
    out = {k: torch.stack([r[k] for r in rows]) for k in ("noisy", "clean", "heatmap")}
    out["columns"] = [(r["columns_x_px"][r["columns_visible"]].numpy(), r["columns_y_px"][r["columns_visible"]].numpy(),
                       float(r["pixel_size"])) for r in rows]
    return out


def log_images(module: pl.LightningModule, key: str, images: list[np.ndarray], captions: list[str]):
    """Sample images as media in W&B (and TensorBoard when configured); CSV logs skip them."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    def u8(a):
        lo, hi = np.percentile(a, [0.5, 99.5])
        return (np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)

    images = [u8(np.asarray(a, np.float32)) for a in images]
    for logger in module.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=images, caption=captions, step=module.global_step)
        elif isinstance(logger, TensorBoardLogger):
            for n, (img, cap) in enumerate(zip(images, captions)):
                logger.experiment.add_image(f"{key}/{n}_{cap}", img[None], module.global_step)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 symmetries of the square on the last two axes."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


class OneCycle(torch.optim.lr_scheduler.OneCycleLR):
    """One-cycle schedule that a resumed run can lengthen (more epochs than the stopped run had):
    the restored state keeps its step counter but takes this run's horizon, instead of failing
    once it steps past the old end."""

    def load_state_dict(self, state_dict):
        total, phases = self.total_steps, self._schedule_phases
        super().load_state_dict(state_dict)
        if total > self.total_steps:
            self.total_steps, self._schedule_phases = total, phases


def adamw_one_cycle(module: pl.LightningModule) -> dict:
    """AdamW with a one-cycle schedule over the whole run (``lr``, ``weight_decay`` from hparams)."""
    h = module.hparams
    opt = torch.optim.AdamW(module.parameters(), lr=h.lr, weight_decay=h.weight_decay)
    total = module.trainer.estimated_stepping_batches
    sched = OneCycle(opt, max_lr=h.lr, total_steps=max(int(total), 1), pct_start=0.1)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class DenoiserModule(pl.LightningModule):
    def __init__(self, encoder: str = "resnet18d", out_indices: tuple[int, ...] = (0, 1, 2, 3),
                 decoder_channels: tuple[int, ...] = (128, 64, 48, 32), stem_channels: int = 16,
                 lr: float = 2e-3, weight_decay: float = 1e-4, heatmap_weight: float = 1.0, crop: int | None = None,
                 pixel_size_range: tuple[float, float] = (0.05, 0.2), export_path: str | None = None,
                 init_from: str | None = None, init_sha256: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = UNet(UNetConfig(encoder, tuple(out_indices), tuple(decoder_channels), stem_channels, 1))
        if init_from:
            self._init_from(init_from, init_sha256)

    def _init_from(self, path: str, sha256: str | None):
        """Start from an exported denoiser's weights (a fine-tune). The digest pins which file: the
        exported file is usually the one this run will overwrite, and a fine-tune of a fine-tune is
        another recipe."""
        from model.denoiser import CheckpointError, Denoiser

        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else None
        if sha256 and digest and digest != sha256:
            raise CheckpointError(f"init_from {path} has sha256 {digest[:16]}…, the config wants {sha256[:16]}…")
        parent = Denoiser.from_checkpoint(path).model
        if parent.config.to_dict() != self.net.config.to_dict():
            raise CheckpointError(f"init_from {path}: architecture {parent.config.to_dict()} is not this "
                                  f"model's {self.net.config.to_dict()}")
        self.net.load_state_dict(parent.state_dict())
        self.init_record = {"path": str(path), "sha256": digest}

    def forward(self, x):
        return self.net(x)

    def _loss(self, batch, augment: bool):
        noisy, clean, heat = batch["noisy"].float(), batch["clean"].float(), batch["heatmap"].float()
        if augment:
            k = int(torch.randint(8, (1,)))
            noisy, clean, heat = (dihedral(t, k) for t in (noisy, clean, heat))
            c = self.hparams.crop
            if c and c < noisy.shape[-1]:  # a random window: cheaper steps, more positions seen
                i, j = (int(torch.randint(n - c + 1, (1,))) for n in noisy.shape[-2:])
                noisy, clean, heat = (t[..., i:i + c, j:j + c] for t in (noisy, clean, heat))
        x, mean, std = normalize(noisy[:, None])
        target = (clean[:, None] - mean) / std
        den, logits = self.net(x)
        l_den = F.l1_loss(den, target)
        l_heat = F.binary_cross_entropy_with_logits(logits, heat[:, None])
        return l_den + self.hparams.heatmap_weight * l_heat, l_den, l_heat, den, logits, target

    def training_step(self, batch, batch_idx):
        loss, l_den, l_heat, *_ = self._loss(batch, augment=True)
        self.log_dict({"train/loss": loss, "train/l1": l_den, "train/bce": l_heat}, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, l_den, l_heat, den, logits, target = self._loss(batch, augment=False)
        mse = ((den - target) ** 2).mean(dim=(1, 2, 3))
        rng = (target.amax(dim=(1, 2, 3)) - target.amin(dim=(1, 2, 3))).clamp_min(1e-6)
        psnr = (10 * torch.log10(rng ** 2 / mse.clamp_min(1e-12))).mean()
        probs = torch.sigmoid(logits[:, 0]).float().cpu().numpy()
        dens = den[:, 0].float().cpu().numpy()
        if batch_idx == 0:
            self._samples = (batch["noisy"][:3].float().cpu().numpy(), dens[:3], probs[:3])
        f1 = []
        for p, d, (tx, ty, px) in zip(probs, dens, batch["columns"]):
            cols = extract_columns(p, d, px)
            f1.append(match_columns(cols.xy, np.stack([tx, ty], 1) * px).f1)
        self.log_dict({"val/loss": loss, "val/l1": l_den, "val/bce": l_heat, "val/psnr": psnr,
                       "val/f1": float(np.mean(f1))}, prog_bar=True, batch_size=len(probs))

    def on_validation_epoch_end(self):
        samples, self._samples = getattr(self, "_samples", None), None
        if samples and not self.trainer.sanity_checking:
            images, captions = [], []
            for n, (noisy, den, heat) in enumerate(zip(*samples)):
                images += [noisy, den, heat]
                captions += [f"{n} noisy", f"{n} denoised", f"{n} heatmap"]
            log_images(self, "val/samples", images, captions)

    def configure_optimizers(self):
        return adamw_one_cycle(self)

    def export(self, path: str | Path, extra: dict | None = None) -> Path:
        """Slim inference checkpoint: architecture, weights, training provenance (no optimiser state)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": CHECKPOINT_FORMAT, "version": 1, "model": self.net.config.to_dict(),
                   "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                   "pixel_size_range": list(self.hparams.pixel_size_range), "meta": extra or {}}
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
        return path


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": str(torch.__version__)}  # with its CUDA build tag
    for name in ("stem2struct", "pytorch-lightning", "timm", "torch-geometric", "abtem", "pymatgen",
                 "ase", "datasets", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def dataset_fingerprint(path: str | Path | None) -> dict | None:
    """The ``datasets`` fingerprint of each split (changes with any content change) plus a digest."""
    if not path or not (Path(path) / "dataset_dict.json").is_file():
        return None
    splits = {state.parent.name: json.loads(state.read_text()).get("_fingerprint")
              for state in sorted(Path(path).glob("*/state.json"))}
    digest = hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()[:16]
    return {"path": str(path), "splits": splits, "digest": digest}


def library_hash() -> str:
    from data.library import LIBRARY_FILE
    from model.retrieval import file_hash

    return file_hash(LIBRARY_FILE)


class ExportBest(pl.Callback):
    """At the end of fit, write the best checkpoint's weights as a slim file (``export_path``)."""

    def on_fit_end(self, trainer, module):
        path = module.hparams.export_path
        if not path or trainer.global_rank != 0:
            return
        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt else ""
        if best:
            state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
            module.load_state_dict(state)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        dm = trainer.datamodule
        meta = {"git": git_state(), "versions": package_versions(), "library_sha256": library_hash(),
                "dataset_fingerprint": dataset_fingerprint(getattr(dm, "path", None)), "best_checkpoint": best,
                "epochs": trainer.current_epoch,  # completed: the counter has moved past the last one
                "val_metrics_last_epoch": metrics, "dataset": getattr(dm, "path", None),
                "data_config": getattr(dm, "data_config", None),
                "init_from": getattr(module, "init_record", None)}
        module.export(path, meta)
        Path(path).with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
