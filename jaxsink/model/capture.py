"""What a forward pass can capture: one `nnx.Intermediate` subclass per family of intermediates.

Blocks call `self.sow(Type, name, value)`; `nnx.capture(model, *types)` collects only the requested types,
so a plain training step (no types) stores nothing, and a probe asks only for what its statistics use.
The names accepted by `forward(..., capture=...)` are the keys of `CAPTURE_TYPES`.
"""
from __future__ import annotations

from flax import nnx


class Residual(nnx.Intermediate):
    """Residual stream: the embedding output H_1 and H_{i+1} after every block i (paper Eq. 4)."""


class BlockOutput(nnx.Intermediate):
    """Block output F_i(.) before the residual add (after the output norm for sandwich placements)."""


class NormedInput(nnx.Intermediate):
    """Normalised block input RMSNorm(H_i) (the raw input where the placement has no input norm)."""


class AttnProbs(nnx.Intermediate):
    """Attention probabilities over the real keys, [B, H, T, T] (the extra sink/bias slot excluded)."""


class QKV(nnx.Intermediate):
    """Queries, keys (after QK-norm and RoPE) and values, [B, T, heads, d_head]."""


class FFNGate(nnx.Intermediate):
    """SwiGLU gate pre-activation z = W_gate h~ (input of SiLU, paper Fig. 2)."""


class AttnGate(nnx.Intermediate):
    """Values of the attention-output gate (paper Table 7), broadcastable to [B, T, H, d_head]."""


CAPTURE_TYPES = {
    "residual": Residual,
    "block_out": BlockOutput,
    "normed_input": NormedInput,
    "attn_probs": AttnProbs,
    "qkv": QKV,
    "ffn_gate": FFNGate,
    "attn_gate": AttnGate,
}


def capture_types(names) -> tuple[type[nnx.Intermediate], ...]:
    unknown = sorted(set(names) - set(CAPTURE_TYPES))
    if unknown:
        raise ValueError(f"unknown capture name(s) {unknown}; choose from {sorted(CAPTURE_TYPES)}")
    return tuple(CAPTURE_TYPES[n] for n in sorted(set(names)))


def collect(intermediates: nnx.State | None, n_blocks: int) -> dict:
    """Turn captured state into `{name: {block_index_1based: array}}` plus `embedding`.

    Collected by the sown name, whatever the module path (MaxText's collect-by-suffix idea), so
    importers and later model changes do not break the statistics code.
    """
    out: dict = {}
    if intermediates is None:
        return out
    tree = nnx.to_pure_dict(intermediates)
    blocks = tree.get("blocks", {})
    for index in range(n_blocks):
        for name, value in _flat(blocks.get(index, {})):
            out.setdefault(name, {})[index + 1] = value[0] if isinstance(value, tuple) else value
    if "embedding" in tree:
        value = tree["embedding"]
        out["embedding"] = value[0] if isinstance(value, tuple) else value
    return out


def _flat(tree, prefix=""):
    """Yield (sown name, value) pairs from a block's nested dict (sown names are unique per block)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, prefix)
        else:
            yield key, value
