"""Train stem2struct's learned stages with Lightning; every setting lives in a YAML under configs/.

    python train.py fit --config configs/denoiser.yaml [--trainer.devices 4 --trainer.strategy ddp]

W&B logs offline unless WANDB_API_KEY is set (then online); a CSV log is always written beside it.
"""
import os

from pytorch_lightning.cli import LightningCLI


def main():
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    from model.training import DenoiserModule, StemDataModule

    LightningCLI(DenoiserModule, StemDataModule, seed_everything_default=0,
                 save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
