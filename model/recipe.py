"""The whole retraining as one recipe: ``python train.py`` (configs/recipe.yaml).

    python train.py                          # data → denoiser → retrieval → index, default recipe
    python train.py --smoke                  # the same on a tiny budget (< 10 min on 2 CPU cores)
    python train.py retrieval index          # chosen stages only
    python train.py --set retrieval.trainer.max_epochs=20 --data-set retrieval.splits.train=40000
    python train.py --install                # copy the run's weights into checkpoints/

Every stage writes into ``<run_dir>/<stage>/`` (resolved config, logs, Lightning checkpoints,
``done.json`` with its validation metrics) and its weights into ``<run_dir>/checkpoints/``, next to
``provenance.json`` (git commit, package versions, structure-library hash, dataset fingerprints).
A finished stage is skipped on a rerun; a stopped one resumes from its ``last.ckpt``. Nothing in
``checkpoints/`` changes unless ``--install`` is given. Every config is resolved and validated before
any stage starts, so a typo costs seconds, not a dataset build.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from data.config import ConfigError, read_yaml, set_dotted
from model.training import dataset_fingerprint, git_state, library_hash, package_versions

STAGES = ("data", "denoiser", "retrieval", "index")
TRAINED = ("denoiser", "retrieval")  # stages that run a Lightning fit
DEFAULT_RECIPE, SMOKE_RECIPE = "configs/recipe.yaml", "configs/recipe_smoke.yaml"
INSTALLED = ("denoiser.pt", "denoiser.json", "retrieval.pt", "retrieval.json", "template_index.npz",
             "provenance.json")


class RecipeError(ValueError):
    """A recipe, override or stage config that cannot run; raised before any work starts."""


@dataclass
class StageSpec:
    config: str  # Lightning YAML, as for `python train.py fit --config …`
    data: str  # data-engine YAML of the dataset the stage trains on
    set: dict = field(default_factory=dict)  # dotted overrides of the Lightning config
    data_set: dict = field(default_factory=dict)  # dotted overrides of the data config


@dataclass
class Recipe:
    name: str
    denoiser: StageSpec
    retrieval: StageSpec
    stages: list = field(default_factory=lambda: list(STAGES))
    run_root: str = "runs"
    dask_address: str | None = None  # a running dask.distributed scheduler for the data stage
    wandb_project: str = "stem2struct"


def _strict(cls, data, where: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    try:
        return cls(**data)
    except TypeError as e:  # a missing required key
        raise RecipeError(f"{where}: {e}") from None


def load_recipe(path: str | Path) -> Recipe:
    try:
        raw = read_yaml(path) or {}
    except ConfigError as e:
        raise RecipeError(f"recipe: {e}") from None
    raw = dict(raw) if isinstance(raw, dict) else raw
    for stage in TRAINED:
        if isinstance(raw, dict) and stage in raw:
            raw[stage] = _strict(StageSpec, raw[stage], f"{path}: {stage}")
    recipe = _strict(Recipe, raw, str(path))
    _check_stages(recipe.stages, str(path))
    return recipe


def _check_stages(stages, where: str):
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise RecipeError(f"{where}: unknown stage(s) {bad}; stages are {list(STAGES)}")


def parse_overrides(items: list[str], flag: str) -> list[tuple[str, str, object]]:
    """``STAGE.KEY=VALUE`` strings → (stage, key, YAML-parsed value)."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        stage, dot, rest = key.partition(".")
        if not sep or not dot or not rest:
            raise RecipeError(f"{flag} {item!r}: expected STAGE.KEY=VALUE, e.g. retrieval.trainer.max_epochs=20")
        if stage not in TRAINED:
            raise RecipeError(f"{flag} {item!r}: stage must be one of {list(TRAINED)}")
        out.append((stage, rest, yaml.safe_load(value)))
    return out


# ----------------------------------------------------------------------------- plan

@dataclass
class StagePlan:
    name: str
    dir: Path
    data_config: dict | None = None  # resolved data-engine config (as a dict, validated)
    lightning: dict | None = None  # resolved Lightning config


def _fill(value, run_dir: Path):
    if isinstance(value, str):
        return value.replace("{run_dir}", str(run_dir))
    if isinstance(value, dict):
        return {k: _fill(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, run_dir) for v in value]
    return value


def _resolve_data(spec: StageSpec, run_dir: Path, dask_address: str | None) -> dict:
    from data.config import load_config, to_dict

    overrides = {k: _fill(v, run_dir) for k, v in spec.data_set.items()}
    if dask_address:
        overrides["dask.address"] = dask_address
    try:
        return to_dict(load_config(spec.data, overrides))
    except ConfigError as e:
        raise RecipeError(f"data config {spec.data}: {e}") from None


def _resolve_lightning(stage: str, spec: StageSpec, run_dir: Path, data_cfg: dict, data_file: Path,
                       recipe: Recipe, group: str) -> dict:
    try:
        cfg = read_yaml(spec.config) or {}
    except ConfigError as e:
        raise RecipeError(f"{stage}: Lightning {e}") from None
    for key, value in spec.set.items():
        try:
            set_dotted(cfg, key, _fill(value, run_dir))
        except ConfigError as e:
            raise RecipeError(f"{stage}.set: {e}") from None
    out = run_dir / stage
    ckpts = run_dir / "checkpoints"
    trainer = cfg.setdefault("trainer", {})
    trainer["default_root_dir"] = str(out)
    for logger in _as_list(trainer.get("logger")):
        args = logger.setdefault("init_args", {})
        args["save_dir"] = str(out)
        if logger.get("class_path", "").endswith("WandbLogger"):
            # one W&B run per stage, grouped per recipe run
            args.update(project=recipe.wandb_project, name=stage, group=group, job_type=stage)
    for cb in _as_list(trainer.get("callbacks")):
        if cb.get("class_path", "").endswith("ModelCheckpoint"):
            cb.setdefault("init_args", {})["dirpath"] = str(out / "checkpoints")
    model = cfg.setdefault("model", {}).setdefault("init_args", {})
    model["export_path"] = str(ckpts / f"{stage}.pt")
    if stage == "retrieval":
        model["index_path"] = str(ckpts / "template_index.npz")
    data = cfg.setdefault("data", {}).setdefault("init_args", {})
    data["path"], data["data_config"] = data_cfg["output"], str(data_file)
    if stage == "retrieval":
        # the views come from the denoiser this run trained, or the installed one when it trains none
        trained = ckpts / "denoiser.pt"
        runs_denoiser = "denoiser" in recipe.stages or trained.is_file()
        data["denoiser_checkpoint"] = str(trained if runs_denoiser else "checkpoints/denoiser.pt")
    return cfg


def _as_list(x):
    return x if isinstance(x, list) else ([x] if isinstance(x, dict) else [])


def plan(recipe: Recipe, stages: list[str], run_dir: Path) -> list[StagePlan]:
    """Resolve and validate every stage's configs; writes nothing."""
    group = f"{recipe.name}-{hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:6]}"
    plans = []
    for stage in stages:
        p = StagePlan(stage, run_dir / stage)
        if stage == "data":
            # the datasets of the trained stages this run includes (all of them for `train.py data`)
            need = [s for s in TRAINED if s in stages] or list(TRAINED)
            p.data_config = {s: _resolve_data(getattr(recipe, s), run_dir, recipe.dask_address) for s in need}
        elif stage in TRAINED:
            spec = getattr(recipe, stage)
            p.data_config = _resolve_data(spec, run_dir, recipe.dask_address)
            p.lightning = _resolve_lightning(stage, spec, run_dir, p.data_config, p.dir / "data.yaml", recipe, group)
            validate_lightning(p.lightning, stage)
        plans.append(p)
    return plans


def validate_lightning(cfg: dict, stage: str):
    """Parse and instantiate (model, data module, trainer) without fitting: unknown keys, wrong
    types and missing classes fail here."""
    from model.training import make_cli

    try:
        make_cli(["--config", yaml.safe_dump(cfg, sort_keys=False)], run=False, parser_kwargs={"exit_on_error": False})
    except SystemExit:  # jsonargparse has printed the reason
        raise RecipeError(f"{stage}: invalid Lightning config (see the message above)") from None
    except Exception as e:  # noqa: BLE001 - any parser/instantiation error is a config error here
        msg = " ".join(str(e).split())
        raise RecipeError(f"{stage}: invalid Lightning config: {msg[:400]}") from None


# ----------------------------------------------------------------------------- stages

def _write_yaml(path: Path, data: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def run_data(p: StagePlan, quiet: bool) -> dict:
    from data.build import build
    from data.config import load_config

    out = {}
    for stage, cfg in p.data_config.items():
        f = p.dir / f"{stage}.yaml"
        _write_yaml(f, cfg)
        t0 = time.perf_counter()
        if not Path(cfg["output"]).exists():
            build(load_config(f), progress=not quiet)
        out[stage] = {"seconds": round(time.perf_counter() - t0, 1), "dataset": dataset_fingerprint(cfg["output"])}
    return out


def run_fit(p: StagePlan, quiet: bool) -> dict:
    from model.training import make_cli

    _write_yaml(p.dir / "data.yaml", p.data_config)
    cfg_file = p.dir / "config.yaml"
    _write_yaml(cfg_file, p.lightning)
    last = p.dir / "checkpoints" / "last.ckpt"
    args = ["--config", str(cfg_file)]
    resumed = last.is_file()
    cli = make_cli(args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(last) if resumed else None)
    # ExportBest has loaded the best weights into the module: this scores what was exported
    val = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=not quiet)
    _finish_wandb()
    return {"resumed_from": str(last) if resumed else None, "global_step": int(cli.trainer.global_step),
            "epochs": int(cli.trainer.current_epoch), "best_checkpoint": cli.trainer.checkpoint_callback.best_model_path
            if cli.trainer.checkpoint_callback else None,
            "val": {k: float(v) for k, v in (val[0] if val else {}).items()},
            "dataset": dataset_fingerprint(p.data_config["output"])}


def _finish_wandb():
    """Close this stage's W&B run, so the next stage opens its own instead of appending to it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def run_index(run_dir: Path) -> dict:
    import numpy as np

    from model.retrieval import build_index, load_model

    ckpt = run_dir / "checkpoints" / "retrieval.pt"
    if not ckpt.is_file():
        ckpt = Path("checkpoints/retrieval.pt")
    model, _ = load_model(ckpt)
    index = build_index(model, ckpt)
    out = run_dir / "checkpoints" / "template_index.npz"
    index.save(out)
    from data.library import zone_axis_pairs

    pairs = zone_axis_pairs()
    norms = np.linalg.norm(index.embeddings, axis=1)
    return {"checkpoint": str(ckpt), "index": str(out), "entries": len(index), "library_pairs": len(pairs),
            "unit_norm": bool(np.allclose(norms, 1, atol=1e-4))}


def provenance(recipe_file: str, run_dir: Path) -> dict:
    return {"recipe": recipe_file, "run_dir": str(run_dir), "git": git_state(), "versions": package_versions(),
            "library_sha256": library_hash(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cuda": _cuda()}


def _cuda() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def install(run_dir: Path, target: Path = Path("checkpoints")) -> list[str]:
    src = run_dir / "checkpoints"
    done = []
    for name in INSTALLED:
        if (src / name).is_file():
            tmp = target / f".{name}.tmp"
            shutil.copy2(src / name, tmp)
            tmp.replace(target / name)
            done.append(name)
    if "denoiser.pt" in done or "retrieval.pt" in done:
        print("note: checkpoints/calibration.json was fitted to the previous models; "
              "re-run `python bench/calibrate.py --data datasets/bench-val` (README, Calibration) for a matching "
              "refusal threshold", file=sys.stderr)
    return done


# ----------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python train.py", description=__doc__.split("\n\n")[0],
                                 epilog="Single stages the Lightning way: python train.py fit --config "
                                        "configs/denoiser.yaml [--trainer.devices 4 --trainer.strategy ddp]")
    ap.add_argument("stages", nargs="*", metavar="STAGE", help=f"stages to run, in order (default: the recipe's; "
                                                               f"any of {', '.join(STAGES)})")
    ap.add_argument("--recipe", help=f"recipe YAML (default: {DEFAULT_RECIPE})")
    ap.add_argument("--smoke", action="store_true", help=f"the tiny recipe {SMOKE_RECIPE} (< 10 min on 2 CPU cores)")
    ap.add_argument("--run-dir", help="where the run lives (default: <run_root>/<recipe name>); rerun to resume")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="override the stage's Lightning config, e.g. retrieval.trainer.max_epochs=20")
    ap.add_argument("--data-set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="override the stage's data config, e.g. retrieval.splits.train=40000")
    ap.add_argument("--dask-address", help="dask.distributed scheduler for the data stage (default: a local cluster)")
    ap.add_argument("--fresh", action="store_true", help="delete the run directory first instead of resuming")
    ap.add_argument("--install", action="store_true", help="copy the run's weights and index into checkpoints/")
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke and args.recipe:
        print("train.py: give --smoke or --recipe, not both", file=sys.stderr)
        return 2
    recipe_file = args.recipe or (SMOKE_RECIPE if args.smoke else DEFAULT_RECIPE)
    try:
        recipe = load_recipe(recipe_file)
        stages = args.stages or recipe.stages
        _check_stages(stages, "command line")
        stages = [s for s in STAGES if s in stages]  # the pipeline's order, whatever order was typed
        for stage, key, value in parse_overrides(args.set, "--set"):
            getattr(recipe, stage).set[key] = value
        for stage, key, value in parse_overrides(args.data_set, "--data-set"):
            getattr(recipe, stage).data_set[key] = value
        if args.dask_address:
            recipe.dask_address = args.dask_address
        recipe.stages = stages
        run_dir = Path(args.run_dir or Path(recipe.run_root) / recipe.name)
        plans = plan(recipe, stages, run_dir)
    except RecipeError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    _write_yaml(run_dir / "recipe.yaml", asdict(recipe))
    prov = provenance(recipe_file, run_dir)
    summary = {}
    for p in plans:
        marker = p.dir / "done.json"
        if marker.is_file():
            print(f"[{p.name}] done already ({marker}); skipped", flush=True)
            summary[p.name] = json.loads(marker.read_text())
            continue
        print(f"[{p.name}] running in {p.dir}", flush=True)
        p.dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if p.name == "data":
            result = run_data(p, args.quiet)
        elif p.name == "index":
            result = run_index(run_dir)
        else:
            result = run_fit(p, args.quiet)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        marker.write_text(json.dumps(result, indent=1, default=str) + "\n")
        summary[p.name] = result
    prov["stages"] = summary
    (run_dir / "checkpoints" / "provenance.json").write_text(json.dumps(prov, indent=1, default=str) + "\n")
    print(json.dumps({k: {kk: v.get(kk) for kk in ("seconds", "val", "entries") if kk in v}
                      for k, v in summary.items()}, indent=1, default=str))
    if args.install:
        print("installed into checkpoints/: " + ", ".join(install(run_dir)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    sys.exit(main())
