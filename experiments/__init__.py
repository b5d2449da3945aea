"""The paper's ablation tables as declarative sweeps (installed as `jaxsink.experiments`), and their registry.

Each module defines `TITLE`, `PAPER` ({variant: `PaperRow`}, the paper's numbers where it has them),
`CLAIMS` (a list of `Claim`, judged by `jaxsink.claims`) and `variants(scale, base) -> {name: [config
overrides]}` for scale in `tiny`, `small`, `paper`, where `base` is the scale's base config (`jaxsink.sweep`)
with the command line's overrides. Every variant of one experiment uses the same data order and seed.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import NamedTuple

from jaxsink.config import ConfigError


class PaperRow(NamedTuple):
    """One row of the paper's table: perplexity, sink ratio in percent, spike (top-1 |h|)."""
    perplexity: float
    sink_ratio_percent: float
    spike: float


class Claim(NamedTuple):
    """A pairwise claim of the paper's Section 4: `metric` of variant `a` is `relation` that of variant `b`:
    ">" above, "<" below, "~" unchanged (both ways), "kept" at least a fraction of it (`jaxsink.claims`)."""
    text: str
    metric: str
    a: str
    relation: str
    b: str


def names() -> list[str]:
    """Every experiment module, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def load(name: str):
    """The experiment module `name`; an unknown name is a one-line ConfigError."""
    if name not in names():
        raise ConfigError(f"unknown experiment {name!r}; choose from {names()}")
    return importlib.import_module(f"{__name__}.{name}")
