"""Fake quantization, the linear-layer interception and the outlier statistics against float64 NumPy."""
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import scipy.stats

import reference_numpy as ref
from test_model import random_params, to_numpy
from variants import flat, spec
from jaxsink.impact import intercept, outliers, qmodel
from jaxsink.impact.quant import QuantError, QuantSpec, fake_quant, fake_quant_weight, quantize, sqnr_db
from jaxsink.model import apply, build, split

RNG = np.random.default_rng(0)


def np_quant(x, fmt, axes):
    """float64 reference: symmetric int-b round-to-nearest, or an ml_dtypes fp8 cast, with scale amax/qmax."""
    x = np.asarray(x, np.float64)
    a = np.max(np.abs(x), axis=axes, keepdims=True)
    if fmt.startswith("int"):
        top = 2 ** (int(fmt[3:]) - 1) - 1
        s = np.where(a > 0, a / top, 1.0)
        return np.clip(np.round(x / s), -top, top) * s
    dtype, top = {"fp8_e4m3": (ml_dtypes.float8_e4m3fn, 448.0), "fp8_e5m2": (ml_dtypes.float8_e5m2, 57344.0)}[fmt]
    s = a / top
    return (x / s).astype(np.float32).astype(dtype).astype(np.float64) * s


def np_sqnr(x, q):
    return 10 * np.log10(np.sum(np.asarray(x, np.float64) ** 2) / np.sum((x - np.asarray(q, np.float64)) ** 2))


@pytest.mark.parametrize("fmt", ["int8", "int4", "fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("gran,axes", [("tensor", None), ("token", (2,)), ("channel", (0, 1))])
def test_fake_quant_matches_numpy(fmt, gran, axes):
    x = RNG.normal(size=(2, 7, 12)).astype(np.float32) * RNG.uniform(0.1, 5, size=(1, 7, 12)).astype(np.float32)
    got = np.asarray(jax.jit(lambda v: fake_quant(v, QuantSpec(fmt, gran)))(x))
    want = np_quant(x, fmt, axes)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(x).max())
    assert np.unique(np.round(got / np.abs(got).max(), 6)).size > 3          # not all-zero


def planted(scale=1000.0):
    x = RNG.normal(size=(2, 32, 64)).astype(np.float32)
    x[:, 0, 5] = scale                       # a massive activation: the first token in one channel
    return x


def test_planted_spike_wrecks_per_tensor_not_per_token():
    x = planted()
    rest = (slice(None), slice(1, None))     # the ordinary tokens
    per_tensor = np.asarray(fake_quant(x, QuantSpec("int8", "tensor")))
    per_token = np.asarray(fake_quant(x, QuantSpec("int8", "token")))
    assert np_sqnr(x[rest], per_tensor[rest]) < 5           # rounded to zero: the scale is the spike's
    assert np_sqnr(x[rest], per_token[rest]) > 35           # ~ int8's 8-bit SQNR on Gaussian rows
    keep = np.zeros((2, 32), bool)
    keep[:, 0] = True                                        # the spike token kept exact
    kept = np.asarray(fake_quant(x, QuantSpec("int8", "tensor"), keep=jnp.asarray(keep)))
    np.testing.assert_array_equal(kept[:, 0], x[:, 0])
    assert np_sqnr(x[rest], kept[rest]) > 30


def test_planted_channel_needs_per_channel():
    """A 1000x channel (every token) is fixed by per-channel scales; per tensor and per token both lose the
    other channels (per-token scales cannot help: every token carries the outlier)."""
    x = RNG.normal(size=(2, 32, 64)).astype(np.float32)
    x[..., 5] *= 1000
    others = np.arange(64) != 5
    for gran, ok in (("tensor", False), ("token", False), ("channel", True)):
        q = np.asarray(fake_quant(x, QuantSpec("int8", gran)))
        assert (np_sqnr(x[..., others], q[..., others]) > 35) == ok, gran


def test_weight_quant_and_errors():
    w = RNG.normal(size=(12, 3, 4)).astype(np.float32)
    got = np.asarray(fake_quant_weight(w, QuantSpec("int4", "channel"), in_axes=(0,)))
    np.testing.assert_allclose(got, np_quant(w, "int4", (0,)), rtol=1e-5, atol=1e-6)
    with pytest.raises(QuantError, match="static per-token"):
        QuantSpec("int8", "token", static=True)
    with pytest.raises(QuantError, match="unknown quantization format"):
        QuantSpec("int3")
    with pytest.raises(QuantError, match="weights"):
        qmodel.QuantConfig(weights=QuantSpec("int8", "token"))
    assert float(sqnr_db(jnp.ones(3), quantize(jnp.ones(3), "int8", 1.0))) == np.inf


def _model(name="baseline", **extra):
    s = spec(name, **extra)
    graphdef, params = split(build(s, seed=1))
    return s, graphdef, random_params(params, seed=3)


@pytest.mark.parametrize("name", ["baseline", "tied", "gate_cond_head"])
def test_intercept_identity_and_sites(name):
    s, graphdef, params = _model(name)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, s.vocab_size, (2, 9)))
    want = apply(graphdef, params, tokens)[0]
    got, sites = jax.jit(lambda p, t: intercept.run(qmodel.plain_forward(graphdef), p, t,
                                                    hook=lambda site, x, w, dot: (dot(x, w), site.index)))(params, tokens)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    paths = []
    intercept.run(qmodel.plain_forward(graphdef), params, tokens, hook=lambda site, x, w, dot: (dot(x, w), paths.append(site)))
    names = [p.name for p in paths]
    layer = ["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"]
    if name == "gate_cond_head":
        layer.insert(3, "gate_w")
    assert names[:len(layer)] == layer
    per_layer = len(layer)
    assert len(paths) == per_layer * s.n_layers + 1 and paths[-1].path in qmodel.HEAD_PATHS
    assert [p.first_with_input for p in paths[:3]] == [0, 0, 0]


@pytest.mark.parametrize("gran", ["channel", "tensor"])
def test_weight_quantized_forward_matches_numpy(gran):
    """W8 (weights only) through the interception = the float64 reference run on NumPy-quantized weights."""
    s, graphdef, params = _model()
    tokens = np.random.default_rng(2).integers(0, s.vocab_size, (2, 9))
    qc = qmodel.QuantConfig(weights=QuantSpec("int8", gran))
    got = np.asarray(qmodel.forward(graphdef, params, jnp.asarray(tokens), qc)[0])
    qparams = to_numpy(params)
    in_axes = {"wq": (0,), "wk": (0,), "wv": (0,), "wo": (0, 1), "w_gate": (0,), "w_up": (0,), "w_down": (0,)}
    for block in qparams["blocks"].values():
        for key, w in block["mixer"].items():
            block["mixer"][key] = np_quant(w, "int8", in_axes[key] if gran == "channel" else None)
    np.testing.assert_allclose(got, ref.forward(qparams, tokens, flat(s)), rtol=2e-4, atol=2e-4)
    assert not np.allclose(got, ref.forward(to_numpy(params), tokens, flat(s)), atol=2e-4)


def test_activation_quant_keep_and_static():
    s, graphdef, params = _model()
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, s.vocab_size, (2, 9)))
    float_logits = np.asarray(apply(graphdef, params, tokens)[0])
    qc = qmodel.QuantConfig(acts=QuantSpec("int4", "tensor"), kv=QuantSpec("int4", "token"))
    lossy = np.asarray(qmodel.forward(graphdef, params, tokens, qc)[0])
    assert not np.allclose(lossy, float_logits, atol=1e-3)
    exact = np.asarray(qmodel.forward(graphdef, params, tokens, qc, keep=jnp.ones((2, 9), bool))[0])
    np.testing.assert_allclose(exact, float_logits, rtol=1e-5, atol=1e-5)
    # static scales: the running max (momentum 0.9) of per-batch amax
    static = qmodel.QuantConfig(acts=QuantSpec("int8", "tensor", static=True))
    b1, b2 = tokens, tokens[::-1, ::-1]
    scales = qmodel.calibrate(graphdef, params, [b1, b2], static)
    dynamic = qmodel.QuantConfig(acts=QuantSpec("int8", "tensor"))
    _, a1 = qmodel.forward(graphdef, params, b1, dynamic)
    _, a2 = qmodel.forward(graphdef, params, b2, dynamic)
    for got, x1, x2 in zip(scales, a1, a2):
        np.testing.assert_allclose(np.asarray(got), 0.9 * np.asarray(x1) + 0.1 * np.asarray(x2), rtol=1e-6)
    with_scales = qmodel.forward(graphdef, params, b1, static, scales=scales)[0]
    assert np.isfinite(np.asarray(with_scales)).all()


def test_outlier_statistics_match_numpy():
    x = planted(scale=300.0)
    x[1, 3, 7] = -200.0                      # a second, smaller outlier token
    b, t, f = x.shape
    x64 = x.astype(np.float64)
    want_bond = np.mean([scipy.stats.kurtosis(x64[i].ravel(), fisher=False) for i in range(b)])
    np.testing.assert_allclose(float(outliers.kurtosis_bondarenko(x)), want_bond, rtol=1e-4)
    want_osp = np.mean(np.maximum(np.mean(x64 ** 4, -1) / np.std(x64, -1) ** 4 - 3, 0))
    np.testing.assert_allclose(float(outliers.kurtosis_osp(x)), want_osp, rtol=1e-4)
    np.testing.assert_allclose(float(outliers.max_abs(x)), np.mean(np.abs(x64).max(axis=(1, 2))), rtol=1e-6)
    m = np.abs(x64).max(-1)
    want_share = np.mean(m > 64 * np.median(m, -1, keepdims=True))
    assert float(outliers.outlier_token_share(x)) == pytest.approx(want_share) == pytest.approx(3 / (2 * t))
    stats = outliers.layer_stats(jnp.asarray(x), (-1,), {"int8/tensor": QuantSpec("int8", "tensor")},
                                 keep=jnp.asarray(np.arange(t) == 0)[None].repeat(b, 0))
    assert float(stats["sqnr"]["int8/tensor"]) == pytest.approx(np_sqnr(x, np_quant(x, "int8", None)), abs=0.05)
