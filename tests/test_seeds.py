"""`jaxsink sweep --seeds N`: one workdir per seed, seeds change initialisation and data order, the row is
the mean over seeds with the per-seed values and the per-sequence spread kept."""
import json

import numpy as np
import pytest

from jaxsink.config import ConfigError
from jaxsink.stats.seeds import combine_seeds
from jaxsink.sweep import seed_runs, sweep

from test_sweep import SMALL, corpus  # noqa: F401  (fixture)


def test_seed_runs_layout():
    assert seed_runs("1/256", ["a=1"], 1) == [("1_256", ["a=1"])]
    assert seed_runs("pre", ["a=1"], 3) == [(f"pre/seed_{s}", ["a=1", f"train.seed={s}"]) for s in range(3)]
    with pytest.raises(ConfigError, match="--seeds 0"):
        seed_runs("pre", [], 0)


def test_combine_seeds_means_and_keeps_values():
    rows = [{"perplexity": p, "sink_ratio": s, "sink1_gu": 0.0, "spike": k, "spike_top1_over_median": k / 2,
             "first_token_mass": [0.1, 0.3], "seed": i, "folder": f"v/seed_{i}",
             "per_sequence": {"spike": [k - 1, k + 1], "perplexity": [p, p]}}
            for i, (p, s, k) in enumerate([(4.0, 0.1, 10.0), (6.0, 0.3, 20.0)])]
    row = combine_seeds(rows)
    assert row["perplexity"] == 5.0 and row["sink_ratio"] == pytest.approx(0.2) and row["spike"] == 15.0
    assert row["seeds"]["spike"] == [10.0, 20.0] and row["seeds"]["first_token_mass_mean"] == [0.2, 0.2]
    assert row["per_sequence_sd"]["spike"] == pytest.approx(np.std([9, 11], ddof=1))
    assert row["n_seeds"] == 2 and row["folder"] == "v/seed_0" and "per_sequence" not in row


def test_sweep_with_two_seeds(corpus, tmp_path):  # noqa: F811
    extra = [o.format(corpus=corpus) for o in SMALL]
    result = sweep("table4_ffn", "tiny", tmp_path, only=["swiglu"], extra=extra, progress=False, seeds=2)
    runs = [json.loads((tmp_path / "swiglu" / f"seed_{s}" / "result.json").read_text()) for s in range(2)]
    assert [r["seed"] for r in runs] == [0, 1]
    assert runs[0]["perplexity"] != runs[1]["perplexity"]            # another init and data order
    assert runs[0]["sample"]["seed"] == 0 and runs[0]["sample"]["windows"] == len(runs[0]["per_sequence"]["spike"])
    saved = json.loads((tmp_path / "results.json").read_text())["variants"]["swiglu"]
    assert saved["n_seeds"] == 2 and saved["seeds"]["perplexity"] == [r["perplexity"] for r in runs]
    assert saved["perplexity"] == pytest.approx(np.mean([r["perplexity"] for r in runs]))
    assert result["variants"]["swiglu"]["perplexity"] == pytest.approx(saved["perplexity"])


def test_report_from_finished_runs_only(tmp_path):
    from jaxsink.sweep import report_finished
    for folder, ppl in (("pre/seed_0", 5.0), ("pre/seed_1", 6.0), ("sandwich/seed_0", 5.5)):
        d = tmp_path / folder
        d.mkdir(parents=True)
        d.joinpath("result.json").write_text(json.dumps(
            {"perplexity": ppl, "sink_ratio": 0.1, "sink1_gu": 0.0, "spike": 20.0, "spike_top1_over_median": 10.0,
             "tokens": 1e6, "folder": folder}))
    out = report_finished("table5_norm", "tiny", tmp_path)
    assert out["variants"] == {"pre": {"n_seeds": 2, "perplexity": 5.5}, "sandwich": {"n_seeds": 1, "perplexity": 5.5}}
    text = (tmp_path / "report.md").read_text()
    assert "| pre | 5.50 [5.00, 6.00] |" in text and "one seed" in text
    with pytest.raises(ConfigError, match="no finished run"):
        report_finished("table4_ffn", "tiny", tmp_path)
