"""Train stem2struct's learned stages with Lightning; every setting lives in a YAML under configs/.

    python train.py [--smoke] [STAGE ...] [--install]     # the whole recipe, configs/recipe.yaml (model/recipe.py)
    python train.py fit --config configs/denoiser.yaml [--trainer.devices 4 --trainer.strategy ddp]
    python train.py fit --config configs/retrieval.yaml

Each Lightning config names its LightningModule and DataModule by ``class_path``.
W&B logs offline unless WANDB_API_KEY is set (then online); with wandb missing or WANDB_MODE=disabled
its logger is dropped with a warning and the CSV log (always written) remains.
On a GPU, training defaults to bf16 mixed precision; the config or --trainer.precision overrides.
"""
import os
import sys


def main(args=None) -> int:
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    argv = sys.argv[1:] if args is None else list(args)
    from model.training import LIGHTNING_SUBCOMMANDS, make_cli

    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        make_cli(argv)
        return 0
    from model.recipe import main as recipe_main

    return recipe_main(argv)


if __name__ == "__main__":
    sys.exit(main())
