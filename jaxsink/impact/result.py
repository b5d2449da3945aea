"""Typed rows of `impact.json` (schema: docs/impact.md). Perplexities are exp(mean next-token NLL)."""
from __future__ import annotations

import dataclasses
import math


def _clean(x):
    """JSON-safe: non-finite floats become None, tuples lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class _Row:
    def to_json(self) -> dict:
        return _clean(dataclasses.asdict(self))


@dataclasses.dataclass
class QuantRow(_Row):
    name: str                 # grid entry, e.g. "W8A8/tensor"
    weights: str | None       # QuantSpec.label of the weights (None: full precision)
    acts: str | None
    kv: str | None
    bits: int                 # the smallest bit width in the entry (plots)
    keep: str                 # "none" | "sinks+spikes"
    perplexity: float
    delta: float              # perplexity - float perplexity
    kept_share: float         # share of tokens kept exact


@dataclasses.dataclass
class EvictionRow(_Row):
    policy: str               # CachePolicy.label
    kind: str
    budget: int
    sinks: int
    recent: int
    perplexity: float


@dataclasses.dataclass
class LayerRow(_Row):
    site: int                 # the first linear layer reading this input
    block: int | None         # paper block (1-based)
    layer: str                # "wq" (attention input), "wo", "w_gate", "w_down", ...
    kurtosis_bondarenko: float
    kurtosis_osp: float
    max_abs: float
    outlier_token_share: float
    sqnr: dict                # quantizer label -> dB (dynamic, nothing kept)
    sqnr_keep: dict           # the same with the sink/spike tokens kept exact


@dataclasses.dataclass
class PruneRow(_Row):
    method: str
    pattern: str
    sparsity: float
    perplexity: float
    delta: float


@dataclasses.dataclass
class ImpactResult:
    source: str
    model: dict
    options: dict
    float_perplexity: float
    quant: list[QuantRow]
    recovery: dict            # entry -> share of its perplexity loss recovered by keeping the tokens exact
    eviction: list[EvictionRow]
    decode_float_perplexity: float | None
    layers: list[LayerRow]
    pruning: list[PruneRow]
    super_weight: dict | None  # SuperWeight.to_json() + perplexity_ablated
    wall_seconds: dict
    plots: list[str]
    passkey: list = dataclasses.field(default_factory=list)   # passkey.PasskeyRow per cache policy

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("quant", "eviction", "layers", "pruning", "passkey"):
            out[key] = [row.to_json() for row in out[key]]
        return _clean(out)
