"""Typed configuration for the data engine, read from YAML with clear errors for bad input."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data.noise import ConditionRanges
from data.simulate import Microscope, SimulationConfig


class ConfigError(ValueError):
    pass


@dataclass
class DaskConfig:
    address: str | None = None  # a running dask.distributed scheduler, e.g. tcp://10.0.0.5:8786
    workers: int = 2  # local cluster size when no address is given
    threads_per_worker: int = 1


@dataclass
class DataConfig:
    output: str = "datasets/stem-small"
    seed: int = 0
    splits: dict = field(default_factory=lambda: {"train": 256, "val": 32, "test": 32})
    image_size: int = 128
    signal: str = "haadf"
    heatmap_sigma: float = 0.3  # Å
    heatmap_min_weight: float = 0.12  # columns fainter than this share of the brightest (Z^1.7) are not targets
    thicknesses: list = field(default_factory=lambda: [30.0, 80.0])  # Å; each repeat image is cached
    include_monolayers: bool = True
    # None: every (entry, zone axis) pair is equally likely, so monolayers are their 2 % share of the
    # train split's pairs; a number: a sample is a monolayer with that probability (a fine-tune that
    # must learn their contrast sees them often enough to)
    monolayer_fraction: float | None = None
    shard_size: int = 32
    cache_dir: str = ".cache/repeats"
    library: str | None = None  # path to a library.json.gz; default: the shipped one
    microscope: Microscope = field(default_factory=Microscope)
    # optional: several instruments (energy, convergence angle, detector angles, aberrations); each
    # sample draws one, so detector settings are randomised too. Empty: ``microscope`` alone.
    microscopes: list = field(default_factory=list)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    conditions: ConditionRanges = field(default_factory=ConditionRanges)
    dask: DaskConfig = field(default_factory=DaskConfig)

    def __post_init__(self):
        bad = set(self.splits) - {"train", "val", "test"}
        if bad:
            raise ConfigError(f"splits: unknown split(s) {sorted(bad)}; use train, val, test")
        if any(int(n) < 0 for n in self.splits.values()):
            raise ConfigError("splits: sample counts must be >= 0")
        if self.image_size < 64 or self.image_size > 4096:
            raise ConfigError(f"image_size {self.image_size} must be within 64-4096 px")
        if self.monolayer_fraction is not None:
            if not 0.0 <= self.monolayer_fraction <= 1.0:
                raise ConfigError(f"monolayer_fraction {self.monolayer_fraction} must be within 0-1")
            if not self.include_monolayers and self.monolayer_fraction > 0:
                raise ConfigError("monolayer_fraction > 0 needs include_monolayers: true")
        if self.shard_size < 1:
            raise ConfigError("shard_size must be >= 1")
        if not self.thicknesses or min(self.thicknesses) <= 0:
            raise ConfigError("thicknesses must be a non-empty list of positive values (Å)")
        if self.signal not in self.simulation.signals:
            raise ConfigError(f"signal {self.signal!r} is not among the simulated signals {self.simulation.signals}")
        from data.simulate import Simulator

        for m in self.instruments:  # fails early on detector/sampling conflicts
            Simulator(m, self.simulation)

    @property
    def instruments(self) -> list[Microscope]:
        return list(self.microscopes) or [self.microscope]


SECTIONS = {"microscope": Microscope, "simulation": SimulationConfig, "conditions": ConditionRanges,
            "dask": DaskConfig}


def _build(cls, data: Any, where: str):
    if not dataclasses.is_dataclass(cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        section = SECTIONS.get(name) if cls is DataConfig else None
        if section:
            value = _build(section, value, name)
        elif cls is DataConfig and name == "microscopes":
            if not isinstance(value, list):
                raise ConfigError("microscopes: expected a list of microscope settings")
            value = [_build(Microscope, m, f"microscopes[{i}]") for i, m in enumerate(value)]
        elif isinstance(value, list) and cls is not DataConfig:
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content (None for an empty file); ConfigError when missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e.__class__.__name__})") from None


def set_dotted(tree: dict, key: str, value) -> None:
    """``a.b.c = value`` in nested mappings, creating the missing ones (their validation names a
    key that does not exist)."""
    node = tree
    for part in key.split(".")[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key!r}: {part!r} is not a mapping")
    node[key.split(".")[-1]] = value


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> DataConfig:
    raw = (read_yaml(path) or {}) if path is not None else {}
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    return _build(DataConfig, raw, "")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
