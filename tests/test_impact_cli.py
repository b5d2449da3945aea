"""`jaxsink impact` end to end on a small random model: impact.json schema, plots, one-line errors."""
import json

import numpy as np
import pytest

from jaxsink.cli import main
from jaxsink.data.tokenizer import ByteTokenizer
from jaxsink.impact import runner
from jaxsink.model import ModelSpec, build, split
from jaxsink.model.loaded import LoadedModel


def test_impact_writes_schema_and_plots(tmp_path):
    spec = ModelSpec(vocab_size=264, n_layers=2, d_model=32, n_heads=2, d_head=16, d_ff=64, max_seq_len=64)
    graphdef, params = split(build(spec, seed=0))
    model = LoadedModel(graphdef, params, spec, ByteTokenizer(), True, "random")
    text = "".join(chr(97 + i % 26) for i in np.random.default_rng(0).integers(0, 26, 4000))
    opts = runner.ImpactOptions(seq_len=16, num_sequences=4, batch_size=2, calib_sequences=2,
                                entries=("W8A8/tensor/static", "A4/token"),
                                decode_len=24, decode_sequences=1, budgets=(8,), sinks=2, progress=False)
    result = runner.impact(model, text, tmp_path, opts)
    r = json.loads((tmp_path / "impact.json").read_text())
    assert set(r) >= {"float_perplexity", "quant", "recovery", "eviction", "layers", "pruning", "super_weight"}
    assert len(r["quant"]) == 4 and {q["keep"] for q in r["quant"]} == {"none", "sinks+spikes"}
    assert [e["policy"] for e in r["eviction"]] == ["window:8", "streaming:2+6", "h2o:heavy+4"]
    assert len(r["layers"]) == 4 * spec.n_layers and "int8/tensor" in r["layers"][0]["sqnr"]
    assert len(r["pruning"]) == 4 and r["super_weight"]["path"].endswith("w_down")
    assert 1 < r["float_perplexity"] < 1000 and r["decode_float_perplexity"] == pytest.approx(
        r["decode_float_perplexity"])
    assert len(result.plots) == 3 and all((tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in result.plots)


@pytest.mark.parametrize("argv,message", [
    (["--parts", "quant", "bogus"], "unknown grid part"),
    (["--budgets", "300"], "KV budgets"),
    (["--entries", "W3A3"], "unknown grid part or entry"),
])
def test_impact_bad_options_are_one_line(tmp_path, capsys, argv, message):
    assert main(["impact", "--gguf", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxsink: error:") and message in err and "\n" not in err


def test_impact_missing_model_is_one_line(tmp_path, capsys):
    assert main(["impact", "--gguf", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
