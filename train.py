"""Train stem2struct's learned stages with Lightning; every setting lives in a YAML under configs/.

    python train.py fit --config configs/denoiser.yaml [--trainer.devices 4 --trainer.strategy ddp]
    python train.py fit --config configs/retrieval.yaml

Each config names its LightningModule and DataModule by ``class_path``.

W&B logs offline unless WANDB_API_KEY is set (then online); a CSV log is always written beside it.
On a GPU, training defaults to bf16 mixed precision; the config or --trainer.precision overrides.
"""
import os

from pytorch_lightning.cli import LightningCLI


class CLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        import torch

        parser.set_defaults({"trainer.precision": "bf16-mixed" if torch.cuda.is_available() else "32-true"})


def main(args=None):
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    CLI(None, None, subclass_mode_model=True, subclass_mode_data=True, seed_everything_default=0,
        save_config_kwargs={"overwrite": True}, args=args)


if __name__ == "__main__":
    main()
