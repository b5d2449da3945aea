"""Import Hugging Face safetensors checkpoints (Llama 1-3, Mistral, Qwen2/2.5, Qwen3, OLMo-2) into the one
jaxsink Transformer, so the probe can analyse real pretrained models.

Everything that can be checked without reading weights (config, tokenizer, tensor names, shapes, dtypes) is
checked first, so a bad checkpoint fails with one line before anything is loaded. Weights are then read one
tensor at a time and put on the device at once: besides the model, the host holds only the current tensor
(its mapped file pages, the copy read and the transposed copy), so a 7B never needs two full host copies.

The name table and `assemble` are shared with the GGUF importer, which renames llama.cpp tensors to these
names and hands over the same torch (out, in) layouts.
"""
from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsink.model import ModelSpec, abstract_model
from jaxsink.model.spec import ConfigError
from jaxsink.model.loaded import LoadedModel

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "olmo2")
SAFETENSOR_DTYPES = ("F64", "F32", "F16", "BF16")
LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")

# name -> array, in any order the reader likes, for the names asked for
Reader = Callable[[list[str]], Iterable[tuple[str, np.ndarray]]]


class CheckpointImportError(ValueError):
    """A checkpoint that cannot be imported; the message is one line naming the file or tensor."""


# ------------------------------------------------------------------ config -> ModelSpec

def spec_from_config(cfg, where: str, dtype: str = "float32") -> ModelSpec:
    """The ModelSpec of an HF config.json dict; `where` names the file in error messages."""
    if not isinstance(cfg, dict):
        raise CheckpointImportError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise CheckpointImportError(f"{where}: unsupported architecture {family!r} (supported: {', '.join(FAMILIES)})")
    _reject_unsupported(cfg, family, where)
    d, heads, layers = (_positive(cfg, k, where) for k in ("hidden_size", "num_attention_heads", "num_hidden_layers"))
    kv = _positive(cfg, "num_key_value_heads", where, heads)
    if heads % kv:
        raise CheckpointImportError(f"{where}: num_attention_heads={heads} is not a multiple of "
                                    f"num_key_value_heads={kv}")
    theta, scaling = _rope(cfg, where)
    olmo = family == "olmo2"
    values = dict(
        vocab_size=_positive(cfg, "vocab_size", where), n_layers=layers, d_model=d, n_heads=heads, n_kv_heads=kv,
        d_head=_positive(cfg, "head_dim", where, d // heads), d_ff=_positive(cfg, "intermediate_size", where),
        norm_placement="sandwich_qk" if olmo else "pre", norm_eps=_number(cfg, "rms_norm_eps", where),
        qk_norm=family == "qwen3", qk_norm_scope="full" if olmo else "head",
        rope_theta=theta, rope_scaling=scaling, max_seq_len=_positive(cfg, "max_position_embeddings", where, 4096),
        sliding_window=_sliding_window(cfg, layers, where), tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=family == "qwen2", dtype=dtype)
    try:
        return ModelSpec(**values)        # the model schema's own validation
    except ConfigError as e:
        raise CheckpointImportError(f"{where}: {e}") from None


def _positive(cfg: dict, key: str, where: str, default=None) -> int:
    value = cfg.get(key)
    if value is None and default is not None:
        return default
    if value is None:
        raise CheckpointImportError(f"{where}: missing {key!r}")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CheckpointImportError(f"{where}: {key!r} must be a positive integer, got {value!r}")
    return value


def _number(cfg: dict, key: str, where: str) -> float:
    value = cfg.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise CheckpointImportError(f"{where}: {key!r} must be a positive number, got {value!r}")
    return float(value)


def _reject_unsupported(cfg: dict, family: str, where: str) -> None:
    """Features the jaxsink model lacks: fail loudly rather than import a different network."""
    if cfg.get("hidden_act", "silu") != "silu":
        raise CheckpointImportError(f"{where}: hidden_act {cfg['hidden_act']!r} is not supported (SwiGLU needs silu)")
    if cfg.get("attention_bias") and family != "qwen2":
        raise CheckpointImportError(f"{where}: attention_bias=true (a bias on the output projection) is not supported")
    if cfg.get("mlp_bias"):
        raise CheckpointImportError(f"{where}: mlp_bias=true is not supported")


def _rope(cfg: dict, where: str) -> tuple[float, tuple]:
    """(theta, Llama-3 scaling or ()) from transformers-5 `rope_parameters` or the older `rope_theta` +
    `rope_scaling` pair."""
    params = {}
    for key in ("rope_scaling", "rope_parameters"):
        value = cfg.get(key) or {}
        if not isinstance(value, dict):
            raise CheckpointImportError(f"{where}: {key!r} must be an object, got {value!r}")
        params.update(value)
    theta = _number({"rope_theta": params.get("rope_theta", cfg.get("rope_theta", 10000.0))}, "rope_theta", where)
    if params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0)) != 1.0:
        raise CheckpointImportError(f"{where}: partial rotary embeddings are not supported")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, ()
    if kind != "llama3":
        raise CheckpointImportError(f"{where}: rope_type {kind!r} is not supported (default or llama3)")
    return theta, tuple(_number(params, key, where) for key in LLAMA3_ROPE_KEYS)


def _sliding_window(cfg: dict, n_layers: int, where: str) -> int:
    """One window for every layer (Mistral), or 0; per-layer windows have no jaxsink equivalent."""
    window = cfg.get("sliding_window") or 0
    if cfg.get("use_sliding_window") is False:       # Qwen2/3 keep a window size they do not use
        return 0
    kinds = set(cfg.get("layer_types") or ["sliding_attention" if window else "full_attention"] * n_layers)
    if kinds == {"full_attention"}:
        return 0
    if kinds != {"sliding_attention"}:
        raise CheckpointImportError(f"{where}: layer_types {sorted(kinds)} (per-layer attention kinds) "
                                    "are not supported")
    if not isinstance(window, int) or window <= 0:
        raise CheckpointImportError(f"{where}: 'sliding_window' must be a positive integer, got {window!r}")
    return window


# ------------------------------------------------------------------ tensor names and layouts

# jaxsink target shape -> the torch-layout shape the checkpoint stores it in
_LAYOUTS = {
    "same": lambda t: t,
    "flat": lambda t: (math.prod(t),),                  # biases: [H*dh] -> [H, dh]
    "in": lambda t: (math.prod(t[1:]), t[0]),            # nn.Linear (out, in) reading the first target axis
    "out": lambda t: (t[-1], math.prod(t[:-1])),         # o_proj (D, H*dh) -> wo [H, dh, D]
}
_MIXER = {"wq": ("self_attn.q_proj.weight", "in"), "wk": ("self_attn.k_proj.weight", "in"),
          "wv": ("self_attn.v_proj.weight", "in"), "wo": ("self_attn.o_proj.weight", "out"),
          "bq": ("self_attn.q_proj.bias", "flat"), "bk": ("self_attn.k_proj.bias", "flat"),
          "bv": ("self_attn.v_proj.bias", "flat"),
          "q_norm": ("self_attn.q_norm.weight", "same"), "k_norm": ("self_attn.k_norm.weight", "same"),
          "w_gate": ("mlp.gate_proj.weight", "in"), "w_up": ("mlp.up_proj.weight", "in"),
          "w_down": ("mlp.down_proj.weight", "in")}
# (jaxsink norm, block parity) -> HF norm; OLMo-2's norms sit after each sub-layer
_NORMS = {("norm_in", 0): "input_layernorm", ("norm_in", 1): "post_attention_layernorm",
          ("norm_out", 0): "post_attention_layernorm", ("norm_out", 1): "post_feedforward_layernorm"}


def hf_name(path: tuple) -> tuple[str, str]:
    """(HF tensor name, layout) of a jaxsink parameter path; block i is HF layer i // 2."""
    fixed = {("embed",): ("model.embed_tokens.weight", "same"), ("head",): ("lm_head.weight", "in"),
             ("final_norm", "scale"): ("model.norm.weight", "same")}
    if path in fixed:
        return fixed[path]
    _, i, part, leaf, *_ = path
    suffix, layout = _MIXER[leaf] if part == "mixer" else (_NORMS[part, i % 2] + ".weight", "same")
    return f"model.layers.{i // 2}.{suffix}", layout


def assemble(spec: ModelSpec, shapes: dict[str, tuple], read: Reader, where: str):
    """(graphdef, params) of `spec` filled from the checkpoint's tensors (torch layouts, `shapes` by name).

    Names and shapes are all checked before `read` is called; then each tensor is converted and placed on
    the default device as it arrives, and its host copies are dropped.
    """
    graphdef, abstract = abstract_model(spec)
    plan = {}
    for path, var in nnx.to_flat_state(abstract):
        name, layout = hf_name(path)
        if name not in shapes:
            raise CheckpointImportError(f"{where}: missing tensor {name!r}")
        want = _LAYOUTS[layout](tuple(var.shape))
        if tuple(shapes[name]) != want:
            raise CheckpointImportError(f"{where}: tensor {name!r} has shape {list(shapes[name])}, "
                                        f"the config implies {list(want)}")
        plan[name] = (path, layout, tuple(var.shape))
    ignored = {"lm_head.weight"} if spec.tie_embeddings else set()
    extra = sorted(n for n in set(shapes) - set(plan) - ignored if not n.endswith("rotary_emb.inv_freq"))
    if extra:
        raise CheckpointImportError(f"{where}: unexpected tensor {extra[0]!r} "
                                    f"({len(extra)} not described by the config)")
    dtype, params = jnp.dtype(spec.dtype), {}
    for name, array in read(list(plan)):
        path, layout, shape = plan[name]
        x = array.T if layout in ("in", "out") else array
        if not np.isfinite(np.sum(x, dtype=np.float64)):   # a float64 sum of finite weights cannot overflow
            raise CheckpointImportError(f"{where}: tensor {name!r} holds {int(np.sum(~np.isfinite(x)))} non-finite "
                                        "values (NaN/Inf): a corrupt checkpoint; nothing was loaded")
        # wait for each copy: an async device_put would keep host buffers alive and pile them up
        _insert(params, path, jax.device_put(np.asarray(x.reshape(shape), dtype)).block_until_ready())
    return graphdef, params


def _insert(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


# ------------------------------------------------------------------ safetensors files

def _read_json(file: pathlib.Path):
    if not file.is_file():
        raise CheckpointImportError(f"{file}: no such file")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointImportError(f"{file}: malformed JSON ({e})") from None


def safetensors_index(directory: pathlib.Path) -> tuple[dict[str, tuple], Reader]:
    """Shapes of every tensor (from the headers only; single file or sharded with an index) and a reader."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointImportError(f"{index}: no 'weight_map' object")
        files = sorted(set(weight_map.values()))
    elif (directory / "model.safetensors").is_file():
        weight_map, files = None, ["model.safetensors"]
    else:
        raise CheckpointImportError(f"{directory}: no model.safetensors or model.safetensors.index.json")
    located = {}
    for file in files:
        for name, shape in _header(directory / file):
            located[name] = (shape, directory / file)
    for name, file in (weight_map or {}).items():
        if name not in located or located[name][1].name != file:
            raise CheckpointImportError(f"{index}: tensor {name!r} is not in {file}")

    def read(names: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        """Opens the file per tensor: safe_open memory-maps it, and the pages read stay resident (counted in
        RSS) until it is closed, so a shard held open would add up to its whole size to the peak."""
        from safetensors import safe_open
        for name in names:
            with safe_open(str(located[name][1]), framework="np") as f:
                yield name, f.get_tensor(name)
    return {name: shape for name, (shape, _) in located.items()}, read


def _header(file: pathlib.Path) -> list[tuple[str, tuple]]:
    """(name, shape) of every tensor of one safetensors file, checking that it is complete and unquantized."""
    from safetensors import SafetensorError, safe_open
    if not file.is_file():
        raise CheckpointImportError(f"{file}: missing shard")
    try:
        with safe_open(str(file), framework="np") as f:
            header = [(name, f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape())) for name in f.keys()]
    except SafetensorError as e:
        raise CheckpointImportError(f"{file}: truncated or corrupt safetensors ({str(e).splitlines()[0]})") from None
    for name, dtype, _ in header:
        if dtype not in SAFETENSOR_DTYPES:
            raise CheckpointImportError(f"{file}: tensor {name!r} has dtype {dtype} "
                                        f"(only {', '.join(SAFETENSOR_DTYPES)} are supported)")
    return [(name, shape) for name, _, shape in header]


# ------------------------------------------------------------------ tokenizer

class HFTokenizer:
    """A `tokenizers.Tokenizer` behind jaxsink's tokenizer interface. `encode` adds no special tokens: the
    probe puts BOS in front itself when the model's convention (`LoadedModel.bos`) asks for it."""
    kind = "hf"

    def __init__(self, tok, bos_id: int | None, vocab_size: int):
        self._tok, self.bos_id, self.vocab_size = tok, bos_id, vocab_size

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).ravel()])


def _hf_tokenizer(directory: pathlib.Path, cfg: dict, spec: ModelSpec) -> tuple[HFTokenizer, bool]:
    """The tokenizer and whether the model's sequences start with BOS (Llama: yes, Qwen: no)."""
    from tokenizers import Tokenizer
    file = directory / "tokenizer.json"
    if not file.is_file():
        raise CheckpointImportError(f"{file}: no such file (the probe needs the model's own tokenizer)")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises plain Exception for bad JSON
        raise CheckpointImportError(f"{file}: unreadable tokenizer ({str(e).splitlines()[0][:120]})") from None
    tok_cfg_file = directory / "tokenizer_config.json"
    tok_cfg = _read_json(tok_cfg_file) if tok_cfg_file.is_file() else {}
    bos_id = cfg.get("bos_token_id")
    if not isinstance(bos_id, int):
        token = tok_cfg.get("bos_token")
        token = token.get("content") if isinstance(token, dict) else token
        bos_id = tok.token_to_id(token) if isinstance(token, str) else None
    adds = tok_cfg.get("add_bos_token")
    if adds is None:        # no flag: ask the tokenizer's own post-processor
        adds = bos_id is not None and tok.encode("a").ids[:1] == [bos_id]
    vocab = min(tok.get_vocab_size(with_added_tokens=True), spec.vocab_size)
    return HFTokenizer(tok, bos_id, vocab), bool(adds) and bos_id is not None


# ------------------------------------------------------------------ entry point

def load_hf(path, dtype: str = "float32"):
    """A `LoadedModel` from an HF checkpoint folder (config.json, tokenizer.json, model.safetensors or shards).

    `dtype` ("float32" or "bfloat16") is both the stored parameter dtype and the compute dtype.
    """
    directory = pathlib.Path(path)
    cfg = _read_json(directory / "config.json")
    spec = spec_from_config(cfg, str(directory / "config.json"), dtype)
    shapes, read = safetensors_index(directory)
    tokenizer, bos = _hf_tokenizer(directory, cfg, spec)
    graphdef, params = assemble(spec, shapes, read, str(directory))
    return LoadedModel(graphdef, params, spec, tokenizer, bos, f"hf:{directory}")
