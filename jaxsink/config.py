"""Configuration: one locked `ml_collections.ConfigDict` schema, command-line overrides, validation.

Every run is described by a ConfigDict with four sections (`model`, `train`, `data`, `mesh`, plus `stats`
for training-time spike/sink statistics). Config files in `configs/` expose `get_config()` that starts from
`base_config()` and changes values; the dict is locked, so a typo in a file or on the command line is an
error, not a silently ignored key. `validate()` checks every value and every combination before any compute
and raises `ConfigError` with one line naming the key.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import pathlib

import ml_collections

from jaxsink.model.spec import (ATTENTIONS, FFNS, GATES, NORM_PLACEMENTS, NORM_TYPES, POSITIONS,  # noqa: F401
                                ConfigError, config_defaults, validate_model)

TOKENIZERS = ("byte", "bpe")
NAN_POLICIES = ("stop", "skip")


def base_config() -> ml_collections.ConfigDict:
    """The full schema with defaults: a small pre-norm Llama-style model (paper §2.1); the `model` section
    is `ModelSpec`'s fields (jaxsink/model/spec.py)."""
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(config_defaults())   # the one model schema: `ModelSpec`
    c.train = ml_collections.ConfigDict(dict(
        steps=1000, batch_size=16, seq_len=128, grad_accum=1,
        lr=1e-3, min_lr_ratio=0.1, warmup_steps=100,
        weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, grad_clip=1.0,
        decay_norms=False, decay_embeddings=False, decay_biases=False,
        loss_start=0, loss_end=0,                          # loss on positions [loss_start, loss_end); 0 = seq_len
        seed=0, log_every=10, eval_every=0, eval_sequences=64,
        checkpoint_every=200, keep_checkpoints=3, async_checkpointing=True,
        checkpoint_dir="",       # "" = WORKDIR/checkpoints; a gs:// path on multi-host pods (shared by all hosts)
        nan_policy="stop",
    ))
    c.stats = ml_collections.ConfigDict(dict(
        every=0,                 # training-time spike/sink statistics every N steps (0: off)
        sink_eps=0.3, sink_seq_len=64,
        sequences=0,             # statistics on the first N sequences of the step's first micro-batch (0: all)
    ))
    c.data = ml_collections.ConfigDict(dict(
        corpus="shakespeare", tokenizer="byte", bpe_vocab_size=4096, heldout_fraction=0.05,
    ))
    c.mesh = ml_collections.ConfigDict(dict(
        data=-1, fsdp=1, tensor=1,   # data (or fsdp) -1: all remaining devices
        # logical axis -> mesh axes (MaxText-style rules); an axis that does not divide a dim is dropped
        rules=ml_collections.ConfigDict(dict(
            batch="data,fsdp", embed="fsdp", vocab="tensor", heads="tensor", kv_heads="tensor",
            mlp="tensor", head_dim="", norm="", position="",
            # activations at layer boundaries (jaxsink.model.partitioning; MaxText's activation_* rules)
            activation_batch="data,fsdp", activation_length="", activation_embed="tensor",
            activation_heads="tensor", activation_kv_heads="tensor", activation_mlp="tensor",
            activation_vocab="tensor",
        )),
    ))
    c.lock()
    return c


# ---------------------------------------------------------------- loading and overrides

def load_config(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """Load `get_config()` from a config file path or a shipped config name (`tiny`), then apply overrides."""
    module = _import_config_module(spec)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config {spec!r} has no get_config() function")
    try:
        cfg = module.get_config()
    except (AttributeError, KeyError, TypeError) as e:
        first = str(e).strip("'\"").split(". ")[0].splitlines()[0]
        raise ConfigError(f"config {spec!r}: {first}") from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"config {spec!r}: get_config() must return an ml_collections.ConfigDict")
    apply_overrides(cfg, overrides)
    return cfg


def _import_config_module(spec: str):
    path = pathlib.Path(spec)
    if path.suffix == ".py":
        if not path.is_file():
            raise ConfigError(f"config file {spec!r} does not exist")
        mod_spec = importlib.util.spec_from_file_location(f"jaxsink_user_config_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(f"jaxsink.configs.{spec}")
    except ModuleNotFoundError:
        raise ConfigError(f"unknown config {spec!r}: give a .py file or one of {shipped_configs()}") from None


def shipped_configs() -> list[str]:
    folder = pathlib.Path(importlib.import_module("jaxsink.configs").__file__).parent
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


CONFIG_PREFIX = "--config."


def split_overrides(argv):
    """Separate absl-style `--config.key=value` overrides from the other arguments."""
    rest, overrides = [], []
    args = iter(argv)
    for a in args:
        if a.startswith(CONFIG_PREFIX):
            body = a[len(CONFIG_PREFIX):]
            if "=" not in body:
                body = f"{body}={next(args, '')}"
            overrides.append(body)
        else:
            rest.append(a)
    return rest, overrides


def apply_overrides(cfg: ml_collections.ConfigDict, overrides) -> None:
    """Apply `section.key=value` strings (the `--config.` prefix already removed), type-checked."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like --config.section.key=value")
        key, raw = item.split("=", 1)
        set_value(cfg, key.strip(), raw)


def set_value(cfg: ml_collections.ConfigDict, key: str, raw) -> None:
    """Set `key` (dotted) to `raw` (a string from the command line, or a Python value)."""
    *parents, leaf = key.split(".")
    node = cfg
    for i, part in enumerate(parents):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ConfigError(f"unknown config key {'.'.join(parents[:i + 1])!r}")
        node = node[part]
    if leaf not in node:
        raise ConfigError(f"unknown config key {key!r}")
    old = node[leaf]
    value = _parse(raw, old, key) if isinstance(raw, str) else raw
    try:
        node[leaf] = value
    except TypeError:
        raise ConfigError(f"config key {key!r} expects {type(old).__name__}, got {value!r}") from None


def _parse(raw: str, old, key: str):
    if isinstance(old, str):
        return raw
    if isinstance(old, bool):
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key {key!r} expects a bool, got {raw!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ConfigError(f"config key {key!r} expects {type(old).__name__}, got {raw!r}") from None
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(old):
        raise ConfigError(f"config key {key!r} expects {type(old).__name__}, got {raw!r}")
    return value


def to_dict(cfg: ml_collections.ConfigDict) -> dict:
    return json.loads(cfg.to_json())


def from_dict(d: dict) -> ml_collections.ConfigDict:
    """Rebuild a config saved with `to_dict` (e.g. from a checkpoint) on top of the current schema."""
    cfg = base_config()
    for section, values in d.items():
        for key, value in _flatten(values, section):
            set_value(cfg, key, value)
    return cfg


def _flatten(values, prefix):
    if isinstance(values, dict):
        for k, v in values.items():
            yield from _flatten(v, f"{prefix}.{k}")
    else:
        yield prefix, values


# ---------------------------------------------------------------- validation

def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {message}")


def _one_of(value, key, options) -> None:
    _check(value in options, key, f"{value!r} is not one of {list(options)}")


def validate(cfg: ml_collections.ConfigDict, device_count: int | None = None) -> None:
    """Check values and combinations before any compute; raise ConfigError naming the key."""
    validate_model(cfg.model)
    _validate_train(cfg.train, cfg.model)
    _validate_data(cfg.data)
    _validate_stats(cfg.stats)
    _validate_mesh(cfg, device_count)


def _validate_train(t, m) -> None:
    for key in ("steps", "batch_size", "seq_len", "grad_accum", "log_every", "keep_checkpoints"):
        _check(t[key] > 0, f"train.{key}", f"must be positive, got {t[key]}")
    for key in ("warmup_steps", "eval_every", "checkpoint_every", "eval_sequences", "loss_start", "loss_end"):
        _check(t[key] >= 0, f"train.{key}", f"must be >= 0, got {t[key]}")
    _check(t.lr > 0, "train.lr", "must be positive")
    _check(0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio", "must be in [0, 1]")
    _check(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _check(0 <= t.b1 < 1 and 0 <= t.b2 < 1, "train.b2" if t.b1 < 1 else "train.b1", "must be in [0, 1)")
    _check(t.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 = no clipping)")
    _check(t.batch_size % t.grad_accum == 0, "train.grad_accum",
           f"batch_size={t.batch_size} is not a multiple of grad_accum={t.grad_accum}")
    _check(t.seq_len <= m.max_seq_len, "train.seq_len",
           f"{t.seq_len} exceeds model.max_seq_len={m.max_seq_len}")
    end = t.loss_end or t.seq_len
    _check(end <= t.seq_len, "train.loss_end", f"{t.loss_end} exceeds train.seq_len={t.seq_len}")
    _check(t.loss_start < end, "train.loss_start", f"{t.loss_start} leaves no position to train on (loss_end={end})")
    _one_of(t.nan_policy, "train.nan_policy", NAN_POLICIES)


def _validate_data(d) -> None:
    _one_of(d.tokenizer, "data.tokenizer", TOKENIZERS)
    _check(bool(d.corpus), "data.corpus", "must name a corpus or a path")
    _check(0 < d.heldout_fraction < 1, "data.heldout_fraction", "must be in (0, 1)")
    if d.corpus == "bb_guo":
        _check(d.tokenizer == "byte", "data.tokenizer", "the generated bb_guo corpus uses the byte tokenizer")
    if d.tokenizer == "bpe":
        _check(d.bpe_vocab_size >= 300, "data.bpe_vocab_size", "must be >= 300 (256 bytes + merges)")


def _validate_stats(s) -> None:
    _check(s.every >= 0, "stats.every", "must be >= 0 (0 = off)")
    _check(0 < s.sink_eps < 1, "stats.sink_eps", "must be in (0, 1)")
    _check(s.sink_seq_len >= 2, "stats.sink_seq_len", "must be >= 2")
    _check(s.sequences >= 0, "stats.sequences", "must be >= 0 (0 = the whole first micro-batch)")


def _validate_mesh(cfg, device_count) -> None:
    mesh, t = cfg.mesh, cfg.train
    _check(mesh.tensor >= 1, "mesh.tensor", f"must be >= 1, got {mesh.tensor}")
    for key in ("data", "fsdp"):
        _check(mesh[key] == -1 or mesh[key] >= 1, f"mesh.{key}", f"must be >= 1 or -1 (infer), got {mesh[key]}")
    _check(mesh.data != -1 or mesh.fsdp != -1, "mesh.fsdp", "only one of mesh.data and mesh.fsdp may be -1")
    if device_count is None:
        return
    shape = mesh_shape(mesh, device_count)
    size = shape[0] * shape[1] * shape[2]
    _check(device_count % size == 0, "mesh", f"data*fsdp*tensor={size} does not divide the {device_count} devices")
    micro = t.batch_size // t.grad_accum
    _check(micro % (shape[0] * shape[1]) == 0, "train.batch_size",
           f"micro-batch {micro} is not divisible by mesh.data*mesh.fsdp={shape[0] * shape[1]}")


def mesh_shape(mesh, device_count: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor); data=-1 (or fsdp=-1) takes every device the other two leave."""
    for key, other_key in (("data", "fsdp"), ("fsdp", "data")):
        if mesh[key] == -1:
            other = mesh[other_key] * mesh.tensor
            _check(device_count % other == 0, "mesh",
                   f"{other_key}*tensor={other} does not divide the {device_count} devices")
            inferred = {key: device_count // other, other_key: mesh[other_key]}
            return inferred["data"], inferred["fsdp"], mesh.tensor
    return mesh.data, mesh.fsdp, mesh.tensor
