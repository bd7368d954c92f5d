"""The denoiser as a predictor: load a checkpoint, run on any image size, return columns.

    den = Denoiser.from_checkpoint("checkpoints/denoiser.pt")
    result = den(image, pixel_size=0.1)   # DenoiseResult: denoised, heatmap, columns (Å)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.columns import Columns, extract_columns, image_as_heatmap
from model.unet import UNet, UNetConfig

CHECKPOINT_FORMAT = "stem2struct-denoiser"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "denoiser.pt"


class CheckpointError(RuntimeError):
    pass


def image_quality(clean: np.ndarray, estimate: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of ``estimate`` against ``clean``, over the clean image's range above its
    minimum (a detector offset would otherwise count as signal). Float64: SSIM's variances in float32
    cancel catastrophically."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    base = float(np.min(clean))
    c = np.asarray(clean, np.float64) - base
    e = np.asarray(estimate, np.float64) - base
    rng = float(c.max())
    return float(peak_signal_noise_ratio(c, e, data_range=rng)), float(structural_similarity(c, e, data_range=rng))


def normalize(img: torch.Tensor | np.ndarray, eps: float = 1e-6):
    """Per-image standardisation; the same statistics map the clean target and back to detector units."""
    mean = img.mean(axis=(-2, -1), keepdims=True)
    std = img.std(axis=(-2, -1), keepdims=True) if isinstance(img, np.ndarray) else \
        img.std(dim=(-2, -1), keepdim=True)
    return (img - mean) / (std + eps), mean, std + eps


@dataclass
class DenoiseResult:
    denoised: np.ndarray  # input units, input shape
    heatmap: np.ndarray  # column probability, input shape
    columns: Columns  # positions in the input's pixel frame and in Å
    working_pixel_size: float  # Å, the sampling the network saw


def _ramp(n: int, overlap: int) -> np.ndarray:
    w = np.ones(n, dtype=np.float32)
    if overlap > 0:
        k = (np.arange(overlap) + 0.5) / overlap
        w[:overlap] = np.sin(0.5 * np.pi * k) ** 2
        w[-overlap:] = w[:overlap][::-1]
    return w


def _starts(n: int, tile: int, step: int) -> list[int]:
    s = list(range(0, max(n - tile, 0) + 1, step))
    if s[-1] + tile < n:
        s.append(n - tile)
    return s


class Denoiser:
    def __init__(self, model: UNet, pixel_size_range=(0.05, 0.2), tile: int = 256, overlap: int = 64,
                 batch_size: int = 4, device: str = "cpu", threshold: float = 0.4, meta: dict | None = None):
        self.model = model.eval().to(device)
        self.pixel_size_range = tuple(pixel_size_range)
        self.tile, self.overlap, self.batch_size = tile, overlap, batch_size
        self.device, self.threshold = device, threshold
        self.meta = meta or {}

    @classmethod
    def from_checkpoint(cls, path: str | Path = DEFAULT_CHECKPOINT, device: str = "cpu", **kwargs) -> "Denoiser":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"denoiser checkpoint {path} not found")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, corrupt or not a torch file
            raise CheckpointError(f"denoiser checkpoint {path} is unreadable ({type(e).__name__})") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a stem2struct denoiser checkpoint")
        model = UNet(UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["model"].items()}))
        try:
            model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the stored architecture ({str(e)[:120]})") from None
        return cls(model, ckpt.get("pixel_size_range", (0.05, 0.2)), device=device, meta=ckpt.get("meta", {}),
                   **kwargs)

    def working_pixel_size(self, pixel_size: float) -> float:
        lo, hi = self.pixel_size_range
        return float(np.clip(pixel_size, lo, hi))

    @torch.no_grad()
    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(batch[:, None]).to(self.device)
        den, logits = self.model(x)
        return den[:, 0].float().cpu().numpy(), torch.sigmoid(logits[:, 0]).float().cpu().numpy()

    def predict_normalized(self, img: np.ndarray, tile: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Network on a normalised image of any size: overlapping tiles blended with a sin² window.

        Memory is three float32 planes (two outputs, blending weights) plus one batch of tiles."""
        stride = self.model.stride
        th = tw = -(-(tile or self.tile) // stride) * stride  # the U-Net needs multiples of its stride
        ny, nx = img.shape
        pad_y, pad_x = max(th - ny, 0), max(tw - nx, 0)
        if pad_y or pad_x:
            img = np.pad(img, ((0, pad_y), (0, pad_x)), mode="reflect")
        H, W = img.shape
        overlap = min(self.overlap, th // 4)
        wy, wx = _ramp(th, overlap if H > th else 0), _ramp(tw, overlap if W > tw else 0)
        win = np.outer(wy, wx)
        den, heat = np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
        weight = np.zeros((H, W), np.float32)
        coords = [(i, j) for i in _starts(H, th, th - overlap) for j in _starts(W, tw, tw - overlap)]
        for k in range(0, len(coords), self.batch_size):
            chunk = coords[k:k + self.batch_size]
            batch = np.stack([img[i:i + th, j:j + tw] for i, j in chunk]).astype(np.float32)
            d, h = self._forward(batch)
            for (i, j), dd, hh in zip(chunk, d, h):
                den[i:i + th, j:j + tw] += dd * win
                heat[i:i + th, j:j + tw] += hh * win
                weight[i:i + th, j:j + tw] += win
        return (den / weight)[:ny, :nx], (heat / weight)[:ny, :nx]

    def __call__(self, image: np.ndarray, pixel_size: float, tile: int | None = None) -> DenoiseResult:
        from skimage.transform import rescale, resize

        image = np.asarray(image, dtype=np.float32)
        work_px = self.working_pixel_size(pixel_size)
        scale = pixel_size / work_px
        work = image if abs(scale - 1) < 1e-6 else \
            rescale(image, scale, order=3, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)
        norm, mean, std = normalize(work)
        mean, std = float(mean.squeeze()), float(std.squeeze())
        den, heat = self.predict_normalized(norm, tile)
        cols = extract_columns(heat, den, work_px, threshold=self.threshold)
        if abs(scale - 1) >= 1e-6:
            den = resize(den, image.shape, order=1, preserve_range=True)
            heat = resize(heat, image.shape, order=1, preserve_range=True)
            # pixel centres: x_in = (x_work + 0.5) / scale - 0.5
            cols = Columns((cols.x_px + 0.5) / scale - 0.5, (cols.y_px + 0.5) / scale - 0.5, cols.score,
                           cols.intensity, pixel_size)
        cols.intensity = cols.intensity * std + mean
        return DenoiseResult(den * std + mean, heat, cols, work_px)


class SmoothingDenoiser:
    """What the pipeline does without the learned denoiser (the ablation): a Gaussian of σ = 0.15 Å,
    about half a column, with columns found as peaks of the smoothed image itself. Same call and
    result as ``Denoiser``, so every later stage runs unchanged."""

    def __init__(self, sigma: float = 0.15, threshold: float = 0.3):
        self.sigma, self.threshold = sigma, threshold

    def working_pixel_size(self, pixel_size: float) -> float:
        return float(pixel_size)

    def __call__(self, image: np.ndarray, pixel_size: float, tile: int | None = None) -> DenoiseResult:
        from scipy import ndimage

        smooth = ndimage.gaussian_filter(np.asarray(image, np.float64), self.sigma / pixel_size)
        heat = image_as_heatmap(smooth)
        cols = extract_columns(heat, smooth, pixel_size, threshold=self.threshold)
        return DenoiseResult(smooth.astype(np.float32), heat.astype(np.float32), cols, float(pixel_size))
