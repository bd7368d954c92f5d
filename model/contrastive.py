"""Lightning pieces for contrastive retrieval training: image ↔ (structure, zone axis) pairs.

The image side trains on what it will see at inference: the shipped denoiser's output, resampled
to the canonical pixel size. Those views are computed once per dataset and denoiser and cached
beside the dataset (``views_<split>.npy``), because denoising thousands of images every epoch
would dominate a CPU run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from model.retrieval import (CANONICAL_PIXEL, STORED_VIEW, VIEW, RetrievalConfig, RetrievalModel, build_index, canonical_view,
                             library_graphs, pair_key, pair_record, save_checkpoint, file_hash)
from model.training import adamw_one_cycle, dihedral, log_images


def _view_rows(path: str, split: str, denoiser_checkpoint: str | None, source: str, start: int, stop: int,
               log_every: int = 0) -> tuple[np.ndarray, list[str]]:
    """Canonical views and pair keys of rows [start, stop) of a dataset split (one worker's share)."""
    from datasets import load_from_disk

    ds = load_from_disk(str(path))[split].select(range(start, stop)).with_format(
        "numpy", columns=[source if source != "denoised" else "noisy", "pixel_size", "template_id", "zone_axis"])
    denoiser = None
    if source == "denoised":
        from model.denoiser import Denoiser

        denoiser = Denoiser.from_checkpoint(denoiser_checkpoint)
    views, keys = np.zeros((len(ds), STORED_VIEW, STORED_VIEW), np.float16), []
    for n, row in enumerate(ds):
        px = float(row["pixel_size"])
        img = row["noisy" if denoiser else source]
        # only the centre becomes the view: denoise just that window (+ a margin the U-Net's
        # receptive field needs), a multiple of its stride, instead of the whole field
        stride = denoiser.model.stride if denoiser else 1
        c = min(-(-int(STORED_VIEW * CANONICAL_PIXEL / px + 24) // stride) * stride, min(img.shape))
        i, j = (img.shape[0] - c) // 2, (img.shape[1] - c) // 2
        img = img[i:i + c, j:j + c]
        if denoiser:
            img = denoiser(img, px, tile=c).denoised
        views[n] = canonical_view(img, px, STORED_VIEW)[0]
        keys.append(pair_key(str(row["template_id"]), row["zone_axis"]))
        if log_every and (n + 1) % log_every == 0:
            print(f"views {split}: {n + 1}/{len(ds)}", flush=True)
    return views, keys


def _view_worker(args) -> tuple[np.ndarray, list[str]]:
    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
    return _view_rows(*args)


def compute_views(path: str | Path, split: str, denoiser_checkpoint: str | None, source: str = "denoised",
                  log_every: int = 500, workers: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Canonical views (float16, (N, STORED_VIEW, STORED_VIEW)) and pair keys of a dataset split, cached.

    Each view is a small denoising plus resampling, ~50 ms of one CPU core, so ``workers`` processes
    (default: every core) share the rows; the result depends on that only through float rounding."""
    import concurrent.futures
    import multiprocessing
    import os

    from datasets import load_from_disk

    path = Path(path)
    tag = source if source != "denoised" else f"denoised-{file_hash(denoiser_checkpoint)}"
    cache, keys_file = path / f"views_{split}_{tag}_{STORED_VIEW}.npy", path / f"views_{split}_keys.json"
    if cache.is_file() and keys_file.is_file():
        return np.load(cache), json.loads(keys_file.read_text())
    n = len(load_from_disk(str(path))[split])
    # by default every core, but at least 32 rows each: a spawned worker costs seconds to start
    workers = max(1, min(workers or min(len(os.sched_getaffinity(0)), n // 32), n))
    if workers == 1:
        views, keys = _view_rows(str(path), split, denoiser_checkpoint, source, 0, n, log_every)
    else:
        bounds = np.linspace(0, n, 4 * workers + 1).astype(int)
        jobs = [(str(path), split, denoiser_checkpoint, source, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        # spawn: the parent may hold CUDA or Lightning threads, which a fork would copy half-initialised
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts, done = [], 0
            for v, k in pool.map(_view_worker, jobs):
                parts.append((v, k))
                done += len(k)
                print(f"views {split}: {done}/{n}", flush=True)
        views = np.concatenate([v for v, _ in parts])
        keys = [key for _, k in parts for key in k]
    np.save(cache, views)
    keys_file.write_text(json.dumps(keys))
    return views, keys


class RetrievalDataModule(pl.LightningDataModule):
    """Views of a ``data.build`` dataset plus the crystal graphs of every train/val (entry, zone axis)."""

    def __init__(self, path: str = "datasets/stem-retrieval-atoms", data_config: str | None = "configs/data_retrieval.yaml",
                 denoiser_checkpoint: str = "checkpoints/denoiser.pt", source: str = "denoised",
                 batch_size: int = 64, num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.path, self.data_config = path, data_config

    def prepare_data(self):
        if not Path(self.path).exists():
            if not self.data_config:
                raise FileNotFoundError(f"dataset {self.path} not found and no data_config to build it from")
            from data.build import build
            from data.config import load_config

            build(load_config(self.data_config, {"output": self.path}))
        for split in ("train", "val"):
            compute_views(self.path, split, self.hparams.denoiser_checkpoint, self.hparams.source)

    def setup(self, stage=None):
        from data.library import zone_axis_pairs

        # test-split materials never enter training, not even as negatives
        pairs = zone_axis_pairs("train") + zone_axis_pairs("val")
        self.records = [pair_record(e, z) for e, z in pairs]
        self.keys = {pair_key(r["template_id"], r["zone_axis"]): i for i, r in enumerate(self.records)}
        self.train_pairs = np.array([i for i, r in enumerate(self.records) if r["split"] == "train"])
        lib = library_graphs()
        self.graphs = [lib[pair_key(e.id, z["uvw"])] for e, z in pairs]
        self.sets = {}
        for split in ("train", "val"):
            views, keys = compute_views(self.path, split, self.hparams.denoiser_checkpoint, self.hparams.source)
            idx = torch.tensor([self.keys[k] for k in keys])
            self.sets[split] = torch.utils.data.TensorDataset(torch.from_numpy(views), idx)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.sets["train"], batch_size=self.hparams.batch_size, shuffle=True,
                                           drop_last=True, num_workers=self.hparams.num_workers,
                                           pin_memory=torch.cuda.is_available())

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.sets["val"], batch_size=self.hparams.batch_size,
                                           num_workers=self.hparams.num_workers)


class RetrievalModule(pl.LightningModule):
    def __init__(self, backbone: str = "resnet10t", embed_dim: int = 128, graph_hidden: int = 96,
                 graph_layers: int = 3, lr: float = 2e-3, weight_decay: float = 1e-4, negatives: int = 128,
                 export_path: str | None = None, index_path: str | None = None, fft: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.net = RetrievalModel(RetrievalConfig(backbone, embed_dim, graph_hidden, graph_layers, fft))
        self._val = []

    def _graph_batch(self, ids):
        from torch_geometric.data import Batch

        graphs = self.trainer.datamodule.graphs
        return Batch.from_data_list([graphs[int(i)] for i in ids]).to(self.device)

    def _augment(self, views: torch.Tensor, train: bool) -> torch.Tensor:
        x = views.float()[:, None]
        off = (STORED_VIEW - VIEW) // 2
        if not train:
            return x[..., off:off + VIEW, off:off + VIEW]
        i, j = (int(torch.randint(STORED_VIEW - VIEW + 1, (1,))) for _ in range(2))
        return dihedral(x[..., i:i + VIEW, j:j + VIEW], int(torch.randint(8, (1,))))

    def training_step(self, batch, batch_idx):
        views, pair = batch
        img = self.net.image(self._augment(views, True))
        # candidates: the batch's own pairs plus random training pairs as extra negatives
        dm = self.trainer.datamodule
        extra = torch.from_numpy(np.random.default_rng(int(self.global_step)).choice(
            dm.train_pairs, size=min(self.hparams.negatives, len(dm.train_pairs)), replace=False))
        uniq, target = torch.unique(torch.cat([pair.cpu(), extra]), return_inverse=True)
        target = target[:len(pair)].to(self.device)
        graph = self.net.graph(self._graph_batch(uniq))
        scale = self.net.logit_scale.exp().clamp(max=100)
        logits = scale * img @ graph.T  # (B, U)
        l_img = F.cross_entropy(logits, target)
        # structure → image over the pairs present in the batch; several images may share a pair
        present = torch.unique(target)
        pos = (target[None, :] == present[:, None]).float()  # (P, B)
        logp = F.log_softmax(logits.T[present], dim=1)
        l_graph = -((logp * pos).sum(1) / pos.sum(1)).mean()
        loss = 0.5 * (l_img + l_graph)
        acc = (logits.argmax(1) == target).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc, "train/scale": scale}, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        views, pair = batch
        x = self._augment(views, False)
        if batch_idx == 0:
            self._samples = x[:4, 0].float().cpu().numpy()
        self._val.append((self.net.image(x).float().cpu(), pair.cpu()))

    def on_validation_epoch_end(self):
        if not self._val:
            return
        img = torch.cat([v[0] for v in self._val])
        true = torch.cat([v[1] for v in self._val]).numpy()
        self._val.clear()
        dm = self.trainer.datamodule
        from model.retrieval import embed_graphs

        cand = torch.from_numpy(embed_graphs(self.net, dm.graphs, device=self.device)).float()
        scores = img @ cand.T
        top = torch.topk(scores, 5, dim=1).indices.numpy()
        rec = dm.records
        pz = lambda i: (rec[i]["prototype"], rec[i]["zone_label"])  # noqa: E731
        top1 = float(np.mean(top[:, 0] == true))
        top5 = float(np.mean([t in row for t, row in zip(true, top)]))
        proto = float(np.mean([pz(row[0]) == pz(t) for t, row in zip(true, top)]))
        loss = F.cross_entropy(self.net.logit_scale.exp().clamp(max=100).cpu() * scores, torch.from_numpy(true))
        samples, self._samples = getattr(self, "_samples", None), None
        if samples is not None and not self.trainer.sanity_checking:
            name = lambda i: f"{rec[i]['template_id']} [{rec[i]['zone_label']}]"  # noqa: E731
            log_images(self, "val/queries", list(samples),
                       [f"true {name(t)} / top-1 {name(row[0])}" for t, row in zip(true[:len(samples)], top)])
        self.log_dict({"val/top1": top1, "val/top5": top5, "val/proto_zone_top1": proto, "val/loss": float(loss)},
                      prog_bar=True)

    def configure_optimizers(self):
        return adamw_one_cycle(self)

    def export(self, path: str | Path, extra: dict | None = None) -> Path:
        """Slim checkpoint plus the template index embedded with exactly these weights."""
        path = save_checkpoint(self.net.cpu(), path, extra)
        if self.hparams.index_path:
            build_index(self.net, path).save(self.hparams.index_path)
        return path
