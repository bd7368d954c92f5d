"""Lightning pieces for the denoiser: data module over the data engine's datasets, the module, export."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytorch_lightning as pl
import numpy as np
import torch
import torch.nn.functional as F

from model.columns import extract_columns, match_columns
from model.denoiser import CHECKPOINT_FORMAT, normalize
from model.unet import UNet, UNetConfig


class StemDataModule(pl.LightningDataModule):
    """Noisy/clean/heatmap triples from a ``datasets`` folder written by ``data.build``.

    If the folder does not exist it is built first from ``data_config`` (the data engine is the
    only source of training data). Training applies the 8 symmetries of the square, which keep
    labels valid."""

    def __init__(self, path: str = "datasets/stem-train", data_config: str | None = "configs/data_train.yaml",
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


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 symmetries of the square on the last two axes."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def adamw_one_cycle(module: pl.LightningModule) -> dict:
    """AdamW with a one-cycle schedule over the whole run (``lr``, ``weight_decay`` from hparams)."""
    h = module.hparams
    opt = torch.optim.AdamW(module.parameters(), lr=h.lr, weight_decay=h.weight_decay)
    total = module.trainer.estimated_stepping_batches
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=h.lr, total_steps=max(int(total), 1), pct_start=0.1)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class DenoiserModule(pl.LightningModule):
    def __init__(self, encoder: str = "resnet18d", out_indices: tuple[int, ...] = (0, 1, 2, 3),
                 decoder_channels: tuple[int, ...] = (128, 64, 48, 32), stem_channels: int = 16,
                 lr: float = 2e-3, weight_decay: float = 1e-4, heatmap_weight: float = 1.0, crop: int | None = None,
                 pixel_size_range: tuple[float, float] = (0.05, 0.2), export_path: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = UNet(UNetConfig(encoder, tuple(out_indices), tuple(decoder_channels), stem_channels, 1))

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
        f1 = []
        for p, d, (tx, ty, px) in zip(probs, dens, batch["columns"]):
            cols = extract_columns(p, d, px)
            f1.append(match_columns(cols.xy, np.stack([tx, ty], 1) * px).f1)
        self.log_dict({"val/loss": loss, "val/l1": l_den, "val/bce": l_heat, "val/psnr": psnr,
                       "val/f1": float(np.mean(f1))}, prog_bar=True, batch_size=len(probs))

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


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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
        meta = {"git_commit": _git_commit(), "best_checkpoint": best,
                "epochs": trainer.current_epoch,  # completed: the counter has moved past the last one
                "val_metrics_last_epoch": metrics, "dataset": getattr(dm, "path", None),
                "data_config": getattr(dm, "data_config", None)}
        module.export(path, meta)
        Path(path).with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
