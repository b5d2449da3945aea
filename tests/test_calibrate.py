import json
import math

import pytest

from jaxsink.calibrate import calibrate, seed_sd


def test_seed_spread_on_the_claims_scale(tmp_path):
    for s, (spike, sink) in enumerate([(10.0, 0.1), (20.0, 0.3), (40.0, 0.2)]):
        d = tmp_path / "pre" / f"seed_{s}"
        d.mkdir(parents=True)
        d.joinpath("result.json").write_text(json.dumps(
            {"spike": spike, "spike_top1_over_median": 5.0, "perplexity": 4.0, "sink_ratio": sink}))
    c = calibrate(tmp_path, "pre")
    assert c["spike"] == pytest.approx(math.log(2)) and c["sink_ratio"] == pytest.approx(0.1)
    assert c["perplexity"] == 0 and c["seeds"] == 3
    with pytest.raises(ValueError, match="at least 2"):
        seed_sd([1.0], "log")


def test_restate_reads_a_record_and_judges_it_again():
    from jaxsink.restate import parse_sections, restate
    record = "\n".join([
        "## Table 5 - normalisation configuration", "",
        "| variant | PPL | Sink ratio | Spike | top-1/median | spike pos |", "|---|---|---|---|---|---|",
        "| pre | 6.73 | 5.3% | 35.5 | 12 | 60 |", "| sandwich | 6.70 | 3.1% | 19.6 | 14 | 3 |", "",
        "| paper's claim | our run | evidence |", "|---|---|---|",
        "| Sandwich norm cuts the spike (7x) | **agrees** | sandwich 19.6 vs pre 35.5 |"])
    sec = parse_sections(record)[0]
    assert sec["results"]["sandwich"] == {"perplexity": 6.70, "sink_ratio": 0.031, "spike": 19.6,
                                          "spike_top1_over_median": 14.0}
    line = [l for l in restate(record).splitlines() if l.startswith("| Sandwich norm cuts")][0]
    # old: agrees on |h| alone; now the point reading splits (top-1/median rose) and one seed is no verdict
    assert line.startswith("| Sandwich norm cuts the spike (7x) | agrees | inconclusive | **inconclusive** |")
