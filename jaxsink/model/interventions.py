"""Interventions a probe applies to the forward pass (paper §3.3-style ablations), as one frozen pytree.

`Interventions` replaces the nested dicts that were split into static jit arguments by hand: its arrays
(masks, values, per-head flags) are pytree leaves, traced by `jax.jit`; `window` and `keep_first` change the
shape of the computation and are pytree metadata, so each distinct value compiles once by itself.
- `residual_edits`: Sun et al.'s zero / mean ablation of spike channels: after block i, the residual stream
  is overwritten with `value` where `mask` is True (applied by the Transformer between blocks);
- `window`, `keep_first`: StreamingLLM window attention in every attention block, keeping the first
  `keep_first` tokens visible (Xiao et al. 2024);
- `drop_first_key`: `FirstKeyMask`s (block, bool[H]) hide key 0 from the queries t >= 1 of those heads (masking the sink);
- `drop_key`: `KeyMask`s (block, int[H]) hide each head's own key k from the queries t > k (-1: none), so a
  head that sinks on a later key loses that key, not key 0.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ResidualEdit:
    """After paper block `block`, residual = where(mask, value, residual); mask [1|B, T, D], value scalar or
    broadcastable array."""
    block: int
    mask: object
    value: object


@dataclasses.dataclass(frozen=True)
class FirstKeyMask:
    """In paper block `block`, the heads flagged in `heads` (bool[H]) do not see key 0 from queries t >= 1."""
    block: int
    heads: object


@dataclasses.dataclass(frozen=True)
class KeyMask:
    """In paper block `block`, head h does not see key `keys[h]` from queries t > keys[h] (int[H]; -1: none)."""
    block: int
    keys: object


@dataclasses.dataclass(frozen=True)
class Interventions:
    residual_edits: tuple[ResidualEdit, ...] = ()
    window: int | None = None          # None: the model's own sliding_window
    keep_first: int = 0
    drop_first_key: tuple[FirstKeyMask, ...] = ()
    drop_key: tuple[KeyMask, ...] = ()

    @property
    def edits_attention(self) -> bool:
        """Whether attention masks change (then the fused kernel, which has a fixed causal mask, is not used)."""
        return (self.window is not None or bool(self.keep_first) or bool(self.drop_first_key)
                or bool(self.drop_key))

    @property
    def empty(self) -> bool:
        return not self.residual_edits and not self.edits_attention

    def edit_residual(self, block: int, h):
        """The residual stream after `block` with this intervention's edits of that block applied."""
        for edit in self.residual_edits:
            if edit.block == block:
                h = jnp.where(edit.mask, jnp.asarray(edit.value, h.dtype), h)
        return h

    def attention_window(self, sliding_window: int) -> int:
        return sliding_window if self.window is None else self.window

    def dropped_first_key(self, block: int):
        """bool[H] of the heads of `block` whose first key is hidden, or None."""
        return next((m.heads for m in self.drop_first_key if m.block == block), None)

    def dropped_key(self, block: int):
        """int[H] of the key each head of `block` no longer sees (-1: none), or None."""
        return next((m.keys for m in self.drop_key if m.block == block), None)


NO_INTERVENTIONS = Interventions()

jax.tree_util.register_dataclass(ResidualEdit, data_fields=["mask", "value"], meta_fields=["block"])
jax.tree_util.register_dataclass(FirstKeyMask, data_fields=["heads"], meta_fields=["block"])
jax.tree_util.register_dataclass(KeyMask, data_fields=["keys"], meta_fields=["block"])
jax.tree_util.register_dataclass(Interventions, data_fields=["residual_edits", "drop_first_key", "drop_key"],
                                 meta_fields=["window", "keep_first"])
