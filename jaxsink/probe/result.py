"""The probe's result as typed records: `ProbeResult` and its parts, `to_json` / `from_json`, and the views
the other stages read (`headline` for the CLI, `summary` for a sweep row), so no caller re-projects it by
hand. `probe.json` is exactly `ProbeResult.to_json()` (schema and definitions in docs/probe.md).

JSON rules (one place): numpy values become Python numbers and lists, int dict keys become strings,
non-finite floats become null; fields marked `HOST_ONLY` (per-token arrays for the plots) never reach JSON,
and fields marked `OPTIONAL` are left out while they are None (the stage that fills them did not run).
"""
from __future__ import annotations

import dataclasses
import types
import typing

import numpy as np

from jaxsink.jsonio import json_ready
from jaxsink.model.spec import ModelSpec
from jaxsink.stats import SpikeCriterion

HOST_ONLY = {"json": False}
OPTIONAL = {"optional": True}


@dataclasses.dataclass
class BlockRow:
    """One block of the life-cycle table (paper Fig. 1, Table 1): means over sequences."""
    index: int
    kind: str                     # "attn" | "ffn"
    residual_top3: list[float]
    residual_median: float
    output_top3: list[float]
    output_median: float
    argmax_position: int          # most frequent position / channel of the largest |h| over sequences
    argmax_channel: int
    spike_token_share: float      # share of sequences with a spike token after this block


@dataclasses.dataclass
class HeadRow:
    """One attention head (paper App. A): alpha_1, the Eq. 28 flag (majority of sequences), locality."""
    block: int
    head: int
    first_token_mass: float
    is_sink: bool
    sink_fraction: float
    mean_distance: float


@dataclasses.dataclass
class LifeCycleValues:
    """Signed values at the spike position of the dominant spike channel per block, and of the 16 largest
    spike channels (means over prompts per position, [n_blocks, T, C])."""
    position: int
    channel: int
    residual: list[float]
    output: list[float]
    channels: list[int]
    channel_means: np.ndarray


@dataclasses.dataclass
class SiluBlock:
    """SiLU near identity in one FFN block (Fig. 2): at the spike token and over the other tokens."""
    spike_token_cos: float
    spike_token_norm_ratio: float
    other_cos: float
    other_norm_ratio: float
    spike_token_output_max: float


@dataclasses.dataclass
class Silu:
    per_block: dict[int, SiluBlock]
    raw: dict = dataclasses.field(default_factory=dict, metadata=HOST_ONLY)   # per-token arrays for silu.png


@dataclasses.dataclass
class SinkKeyRank:
    """Dimension of one sink head's keys at position 0 across prompts (§3.2.2)."""
    rank: int
    participation_ratio: float


@dataclasses.dataclass
class KeyRank:
    """Dimension of the keys of one kv group at a set of spike tokens (§3.2.2, `stats.spike_tokens`); rank and
    participation ratio are None with fewer than two vectors."""
    sink_heads: list[int]
    rank: int | None = dataclasses.field(default=None, metadata=OPTIONAL)
    participation_ratio: float | None = dataclasses.field(default=None, metadata=OPTIONAL)
    vectors: int | None = dataclasses.field(default=None, metadata=OPTIONAL)


@dataclasses.dataclass
class SpikeTokenSet:
    """Near-constancy (Fig. 5, Eq. 24-25) over one set of real spike tokens: mean pairwise cosine of h per block,
    its multi-hotness (also of RMSNorm(h) * gamma of the next block's input norm, what that block reads), and
    the sink keys' rank per kv group ("block/kvG"). `positions` / `prompts`: the flagged (prompt, position)
    pairs; `ids`: the vocabulary probe's ids placed at position 0."""
    pairs: int
    cosine_per_block: dict[int, float | None]
    multi_hotness_per_block: dict[int, dict[str, float]]
    multi_hotness_with_next_gamma_per_block: dict[int, dict[str, float]]
    sink_keys: dict[str, KeyRank]
    positions: dict[int, int] | None = dataclasses.field(default=None, metadata=OPTIONAL)
    prompts: int | None = dataclasses.field(default=None, metadata=OPTIONAL)
    ids: list[int] | None = dataclasses.field(default=None, metadata=OPTIONAL)


@dataclasses.dataclass
class NearConstancy:
    """Fig. 5 over real spike tokens (review P1.1): the pairs flagged at the first step-up block (the peak
    block when there is none) and the vocabulary probe's position-0 spike ids. Position 0 across prompts is
    kept as `pos0_cosine_per_block`, trivially 1 under BOS (`pos0_trivial`)."""
    selected_at_block: int
    selected_by: str                        # "step_up" | "peak_block"
    pos0_cosine_per_block: dict[int, float]
    pos0_trivial: bool
    spike_tokens: SpikeTokenSet | None
    vocab_position_0: SpikeTokenSet | None
    before_step_up: float | None = dataclasses.field(default=None, metadata=OPTIONAL)
    after_step_up: float | None = dataclasses.field(default=None, metadata=OPTIONAL)


@dataclasses.dataclass
class SinkKeys:
    """Sink-key rank over real spike tokens per kv group (None: fewer than two spike tokens), and the first
    version's rank at position 0 across prompts per sink head ("block/head"), 1 by construction under BOS."""
    spike_tokens: dict[str, KeyRank] | None
    pos0_trivial_under_bos: dict[str, SinkKeyRank]


@dataclasses.dataclass
class LifeCycle:
    """One rise-fall cycle of the spike channels (§3.1.1; every cycle, review P2.7), 1-based blocks."""
    step_up: list[int]
    step_down: list[int]
    peak_block: int
    peak: float


@dataclasses.dataclass
class ProbeSample:
    """Which held-out windows were probed (review P2.13): `windows` chunks drawn by `method` with `seed` out
    of `available_chunks`, at `chunk_indices`."""
    method: str                             # "random" (seeded, over the whole text) | "consecutive"
    seed: int
    windows: int
    available_chunks: int
    chunk_indices: list[int]


@dataclasses.dataclass
class UkChannel:
    channel: int
    norm: float
    ratio_to_median: float


@dataclasses.dataclass
class EigenSpectrum:
    """S_k's spectrum at one step-up or step-down FFN block for the largest spike channels (Fig. 4; review
    P2.9): lambda1, lambda2 and the dominance lambda1/|lambda2| per channel, and the mean |cos| between the
    channels' dominant eigenvectors s*."""
    role: str                               # "step_up" | "step_down"
    channels: list[int]
    lambda1: list[float]
    lambda2: list[float]
    dominance: list[float | None]           # None (JSON null) where lambda2 = 0
    eigvec_alignment: float | None
    s_star: np.ndarray | None = dataclasses.field(default=None, metadata=HOST_ONLY)   # of channels[0]


@dataclasses.dataclass
class WVo:
    """Block 1's W_VO as the first token sees it (review P2.8): gamma folded, the value bias making it affine;
    its spectral norm, and |cos| of the first token's attention output with s* of the first step-up block
    beside the chance level in D dimensions (None without a step-up block)."""
    spectral_norm: float
    value_bias: bool
    gamma_folded: bool
    gated: bool
    abs_cos_with_s_star: float | None = dataclasses.field(default=None, metadata=OPTIONAL)
    gain: float | None = dataclasses.field(default=None, metadata=OPTIONAL)
    chance_abs_cos: float | None = dataclasses.field(default=None, metadata=OPTIONAL)
    s_star_block: int | None = dataclasses.field(default=None, metadata=OPTIONAL)
    s_star_channel: int | None = dataclasses.field(default=None, metadata=OPTIONAL)


@dataclasses.dataclass
class Mechanism:
    """||U_k||_F per SwiGLU block (top 3 channels), S_k's spectrum at every step-up and step-down block, W_VO."""
    uk_norm_top: dict[int, list[UkChannel]]
    eigen: dict[int, EigenSpectrum]
    w_vo: WVo
    uk_norm_all: dict = dataclasses.field(default_factory=dict, metadata=HOST_ONLY)   # [D] per block, for the plot


@dataclasses.dataclass
class VocabSpikeFraction:
    """Table 2: the share of probed token ids that become spike tokens at position 0 and at a later one."""
    position_0: float
    later: float
    vocab_size: int
    ids_probed: int
    later_position: int
    position_0_ids: list[int] = dataclasses.field(default_factory=list, metadata=HOST_ONLY)   # for near-constancy

    def to_json(self) -> dict:
        return {"position_0": self.position_0, f"position_{self.later_position}": self.later,
                "vocab_size": self.vocab_size, "ids_probed": self.ids_probed, "later_position": self.later_position}

    @classmethod
    def from_json(cls, d: dict) -> "VocabSpikeFraction":
        p = d["later_position"]
        return cls(d["position_0"], d[f"position_{p}"], d["vocab_size"], d["ids_probed"], p)


@dataclasses.dataclass
class SpikeEdit:
    """Where Sun et al.'s ablation wrote: the block, how many (sequence, position) spike tokens, how many
    channels, and the mean |value - mean| / mean |value| over the edited entries."""
    block: int
    edited_tokens: int
    channels: int
    mean_shift: float


@dataclasses.dataclass
class HeadControl:
    """The matched random-head control (review P1.3): `heads` heads per draw, `draws` draws averaged."""
    heads: int
    draws: int
    drawn_from: str
    key: str


@dataclasses.dataclass
class InterventionLosses:
    """Mean NLL under each intervention (None: not applicable to this model, left out of JSON): Sun et al.'s
    zero / mean ablation of each sequence's own spike tokens, each sink head losing its own sink key vs the
    matched random-head control, and (`windows`) maps "window_W_keep_K" to the loss under StreamingLLM window attention."""
    baseline: float
    spike_channels_zero: float | None = dataclasses.field(default=None, metadata=OPTIONAL)
    spike_channels_mean: float | None = dataclasses.field(default=None, metadata=OPTIONAL)
    spike_edit: SpikeEdit | None = dataclasses.field(default=None, metadata=OPTIONAL)
    mask_sink_heads: float | None = dataclasses.field(default=None, metadata=OPTIONAL)
    mask_random_heads: float | None = dataclasses.field(default=None, metadata=OPTIONAL)
    masked_heads: int | None = dataclasses.field(default=None, metadata=OPTIONAL)
    control: HeadControl | None = dataclasses.field(default=None, metadata=OPTIONAL)
    windows: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        out = _fields_json(self)
        windows = out.pop("windows")
        return {**out, **windows}

    @classmethod
    def from_json(cls, d: dict) -> "InterventionLosses":
        windows = {k: v for k, v in d.items() if k.startswith("window_")}
        rest = {k: v for k, v in d.items() if k not in windows}
        return _from_json(cls, {**rest, "windows": windows})


@dataclasses.dataclass
class ProbeSummary:
    """What a sweep row needs from a probe (paper tables: sink ratio, spike; plus the life cycle)."""
    sink_ratio: float
    spike: float
    sink1_gu: float
    spike_top1_over_median: float
    spike_position: int
    first_token_mass: list[float]           # mean alpha_1 per attention block
    life_cycle: list[dict]                  # {index, residual_top3, residual_median} per block
    per_sequence: dict[str, list[float]]    # the spread over the probe's sequences beside the seed intervals
    sample: ProbeSample
    probe_seq_len: int
    sink_ratio_defined: bool

    def to_json(self) -> dict:
        return _fields_json(self)


@dataclasses.dataclass
class ProbeResult:
    source: str
    model: ModelSpec
    seq_len: int
    num_sequences: int
    sample: ProbeSample
    bos: bool
    sink_eps: float
    criterion: SpikeCriterion
    loss: float
    spike_top1: float
    spike_channels: list[int]
    spike_positions: dict[int, float]       # position -> largest share of sequences flagged there (any block)
    spike_position: int
    spike_channel: int
    spike_peak_block: int
    spike_top1_over_median: float
    spike_channels_by_magnitude: list[int]  # largest |h| first (the eigen-analysis and life cycle use these)
    step_up_blocks: list[int]
    step_down_blocks: list[int]
    life_cycles: list[LifeCycle]
    sink_ratio: float
    sink1_gu: float
    sink_ratio_defined: bool                # False where uniform attention already passes eps at this T
    blocks: list[BlockRow]
    heads: list[list[HeadRow]]
    per_sequence: dict[str, list[float]]    # `stats.per_sequence`: one value per probe sequence
    life_cycle_values: LifeCycleValues
    silu: Silu
    sink_keys: SinkKeys
    near_constancy: NearConstancy
    mechanism: Mechanism
    vocab_spike_fraction: VocabSpikeFraction | None = dataclasses.field(default=None, metadata=OPTIONAL)
    interventions: InterventionLosses | None = dataclasses.field(default=None, metadata=OPTIONAL)
    wall_seconds: float = 0.0
    plots: list[str] | None = dataclasses.field(default=None, metadata=OPTIONAL)

    HEADLINE = ("source", "sample", "loss", "spike_top1", "spike_top1_over_median", "spike_position", "spike_channels",
                "step_up_blocks", "step_down_blocks", "sink_ratio", "sink1_gu", "vocab_spike_fraction",
                "interventions", "wall_seconds", "plots")

    def to_json(self) -> dict:
        return _fields_json(self)

    @classmethod
    def from_json(cls, d: dict) -> "ProbeResult":
        return _from_json(cls, d)

    def headline(self) -> dict:
        """The fields `jaxsink probe` prints (JSON-ready)."""
        full = self.to_json()
        return {k: full[k] for k in self.HEADLINE if k in full}

    def summary(self) -> ProbeSummary:
        return ProbeSummary(
            sink_ratio=self.sink_ratio, spike=self.spike_top1, sink1_gu=self.sink1_gu,
            spike_top1_over_median=self.spike_top1_over_median, spike_position=self.spike_position,
            first_token_mass=[float(np.mean([h.first_token_mass for h in row])) for row in self.heads],
            life_cycle=[{"index": b.index, "residual_top3": b.residual_top3, "residual_median": b.residual_median}
                        for b in self.blocks],
            per_sequence=self.per_sequence, sample=self.sample, probe_seq_len=self.seq_len,
            sink_ratio_defined=self.sink_ratio_defined)


# ------------------------------------------------------------------ generic (de)serialisation

def _fields_json(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("json", True) and not (value is None and f.metadata.get("optional")):
            out[f.name] = _value_json(value)
    return out


def _value_json(value):
    if hasattr(value, "to_json"):
        return value.to_json()
    if dataclasses.is_dataclass(value):
        return _fields_json(value)
    if isinstance(value, dict):
        return {str(k): _value_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_value_json(v) for v in value]
    return json_ready(value)


def _from_json(cls, d: dict):
    hints = typing.get_type_hints(cls)
    kwargs = {f.name: _value_from(hints[f.name], d[f.name]) for f in dataclasses.fields(cls) if f.name in d}
    return cls(**kwargs)


def _value_from(hint, value):
    """Rebuild a value of type `hint` from its JSON form."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _value_from(next(a for a in args if a is not type(None)), value)
    if isinstance(hint, type) and hasattr(hint, "from_json"):
        return hint.from_json(value)
    if dataclasses.is_dataclass(hint):
        return _from_json(hint, value)
    if origin is list:
        return [_value_from(args[0], v) for v in value]
    if origin is dict:
        key = args[0] if args else str
        return {key(k): _value_from(args[1], v) if args else v for k, v in value.items()}
    if hint is np.ndarray:
        return np.asarray(value)
    if hint is tuple:
        return tuple(value)
    return value
