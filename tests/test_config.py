"""Config schema, overrides and validation: bad input is a one-line ConfigError naming the key."""
import pytest

from jaxsink.config import ConfigError, apply_overrides, base_config, from_dict, load_config, to_dict, validate


def _err(cfg, device_count=1):
    with pytest.raises(ConfigError) as e:
        validate(cfg, device_count)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("name", ["tiny", "tiny_sinks", "small", "llama_1b", "paper_7b"])
def test_shipped_configs_validate(name):
    cfg = load_config(name)
    validate(cfg, 1 if name != "paper_7b" else 512)


def test_paper_7b_matches_table_9():
    c = load_config("paper_7b")
    m, t = c.model, c.train
    assert (m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_ff, m.vocab_size) == (32, 4096, 32, 128, 11008, 32000)
    assert (t.b1, t.b2, t.weight_decay, t.grad_clip, t.lr, t.warmup_steps, t.min_lr_ratio) == \
        (0.9, 0.95, 0.1, 1.0, 3e-4, 2000, 0.1)
    assert t.batch_size * t.seq_len == 2 * 1024 * 1024 and t.seq_len == 4096


def test_overrides_are_typed():
    cfg = base_config()
    apply_overrides(cfg, ["model.norm_placement=sandwich", "train.lr=1e-3", "model.qk_norm=true",
                          "train.steps=7", "model.rope_theta=500"])
    assert cfg.model.norm_placement == "sandwich" and cfg.train.lr == 1e-3 and cfg.model.qk_norm is True
    assert cfg.train.steps == 7 and cfg.model.rope_theta == 500.0


@pytest.mark.parametrize("override, key", [
    ("model.norm_placment=pre", "model.norm_placment"),
    ("modle.d_model=3", "modle"),
    ("train.steps=ten", "train.steps"),
    ("train.steps=1.5", "train.steps"),
    ("model.qk_norm=maybe", "model.qk_norm"),
])
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(base_config(), [override])


@pytest.mark.parametrize("overrides, key", [
    (["model.norm_placement=middle"], "model.norm_placement"),
    (["model.attention=linear"], "model.attention"),
    (["model.d_head=33"], "model.d_head"),                         # odd with RoPE
    (["model.n_heads=6", "model.n_kv_heads=4"], "model.n_kv_heads"),
    (["train.batch_size=10", "train.grad_accum=3"], "train.grad_accum"),
    (["train.seq_len=8192"], "train.seq_len"),
    (["train.loss_start=200", "train.seq_len=128"], "train.loss_start"),
    (["model.norm_placement=none", "model.qk_norm=true"], "model.qk_norm"),
    (["data.tokenizer=wordpiece"], "data.tokenizer"),
    (["model.d_model=0"], "model.d_model"),
    (["model.remat=everything"], "model.remat"),
])
def test_impossible_values_and_combinations(overrides, key):
    cfg = base_config()
    apply_overrides(cfg, overrides)
    assert _err(cfg).startswith(key)


def test_mesh_must_divide_devices():
    cfg = base_config()
    apply_overrides(cfg, ["mesh.tensor=3"])
    assert _err(cfg, 8).startswith("mesh")
    cfg = base_config()
    apply_overrides(cfg, ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "train.batch_size=6"])
    assert _err(cfg, 8).startswith("train.batch_size")
    cfg = base_config()
    apply_overrides(cfg, ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"])
    validate(cfg, 8)


def test_odd_d_head_is_fine_without_rope():
    cfg = base_config()
    apply_overrides(cfg, ["model.d_head=33", "model.position=alibi"])
    validate(cfg, 1)


def test_roundtrip_through_dict():
    cfg = base_config()
    apply_overrides(cfg, ["model.gate=cond_head", "mesh.rules.embed="])
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.py"))
    with pytest.raises(ConfigError, match="unknown config"):
        load_config("no_such_config")
    bad = tmp_path / "bad.py"
    bad.write_text("from jaxsink.config import base_config\n"
                   "def get_config():\n    c = base_config()\n    c.model.typo = 1\n    return c\n")
    with pytest.raises(ConfigError, match="typo") as e:
        load_config(str(bad))
    assert "\n" not in str(e.value)


def test_llama_1b_config_has_about_a_billion_parameters():
    import jax
    from jaxsink.model import ModelSpec, abstract_model
    spec = ModelSpec.from_config(load_config("llama_1b").model, vocab_size=32000)
    n = sum(x.size for x in jax.tree.leaves(abstract_model(spec)[1]))
    assert 1.0e9 < n < 1.4e9, n


def test_fsdp_minus_one_takes_every_remaining_device():
    from jaxsink.config import mesh_shape
    cfg = base_config()
    apply_overrides(cfg, ["mesh.data=1", "mesh.fsdp=-1", "mesh.tensor=2"])
    assert mesh_shape(cfg.mesh, 8) == (1, 4, 2)
    validate(cfg, 8)
    apply_overrides(cfg, ["mesh.data=-1"])
    assert _err(cfg, 8).startswith("mesh.fsdp")
