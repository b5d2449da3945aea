"""`LoadedModel`: what every stage after loading works on, whether the model was trained here (a workdir)
or imported (Hugging Face, GGUF): the one jaxsink Transformer as (graphdef, params), its spec, tokenizer and
BOS convention, and accessors for a block's weights, so no caller reaches into parameter paths itself."""
from __future__ import annotations

import dataclasses

from flax import nnx

from jaxsink.model.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    graphdef: object
    params: dict
    spec: ModelSpec
    tokenizer: object
    bos: bool          # whether the model's sequences start with BOS (its tokenizer's convention)
    source: str        # where it came from, for reports ("hf:DIR", "gguf:FILE", "WORKDIR (step N)")

    def attention_blocks(self) -> list[int]:
        """1-based indices of the blocks whose mixer is attention (paper §2.1)."""
        return self.spec.attention_blocks

    def attn_weights(self, block: int) -> dict:
        """The attention parameters of paper block `block` (wq, wk, wv [D, H|Hkv, dh], wo [H, dh, D], ...)."""
        return self.params["blocks"][block - 1]["mixer"]

    def ffn_weights(self, block: int) -> dict:
        """The FFN parameters of paper block `block` (SwiGLU: w_gate, w_up [D, F], w_down [F, D])."""
        return self.params["blocks"][block - 1]["mixer"]

    def input_norm_scale(self, block: int):
        """The learned RMSNorm scale applied to the block's input, or None (no input norm, or not RMSNorm)."""
        norm = self.params["blocks"][block - 1].get("norm_in", {})
        return norm.get("scale") if self.spec.norm_type == "rmsnorm" else None

    def attention_module(self, block: int, params: dict | None = None):
        """The `Attention` module of paper block `block` with `params` (default: this model's; inside a jit
        pass the traced ones), for its pure helpers."""
        merged = nnx.merge(self.graphdef, nnx.State(self.params if params is None else params))
        return merged.blocks[block - 1].mixer
