"""U-Net with a timm encoder and two heads: the denoised image and atom-column heatmap(s)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    encoder: str = "resnet18d"  # any timm model with features_only support
    out_indices: tuple[int, ...] = (0, 1, 2, 3)  # encoder stages used (the deepest, widest one is optional)
    decoder_channels: tuple[int, ...] = (128, 64, 48, 32)
    stem_channels: int = 16  # full-resolution skip: keeps the sub-pixel detail column localisation needs
    heatmap_channels: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Input: (B, 1, H, W) normalised image, H and W multiples of the encoder's largest stride.
    Output: (denoised (B, 1, H, W), heatmap logits (B, C, H, W))."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or UNetConfig()
        # pretrained=False: nothing is downloaded; we train from scratch on simulated data
        self.encoder = timm.create_model(cfg.encoder, features_only=True, in_chans=1, pretrained=False,
                                         out_indices=tuple(cfg.out_indices))
        chans = self.encoder.feature_info.channels()
        self.reductions = self.encoder.feature_info.reduction()
        if len(cfg.decoder_channels) != len(chans):
            raise ValueError(f"decoder_channels needs {len(chans)} entries, one per encoder stage")
        self.stem = _block(1, cfg.stem_channels)
        blocks, cin = [], chans[-1]
        skips = list(chans[:-1])[::-1] + [cfg.stem_channels]
        for skip, cout in zip(skips, cfg.decoder_channels):
            blocks.append(_block(cin + skip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.denoise_head = nn.Conv2d(cin, 1, 1)
        self.heatmap_head = nn.Conv2d(cin, cfg.heatmap_channels, 1)

    @property
    def stride(self) -> int:
        return max(self.reductions)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.encoder(x)
        skips = feats[:-1][::-1] + [self.stem(x)]
        y = feats[-1]
        for block, skip in zip(self.decoder, skips):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        return x + self.denoise_head(y), self.heatmap_head(y)


_REGISTRY = {"unet": UNet}


def create_model(name: str = "unet", **kwargs) -> nn.Module:
    """timm-style factory: ``create_model("unet", encoder="resnet18d")``."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {sorted(_REGISTRY)}")
    cfg = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    return _REGISTRY[name](cfg)
