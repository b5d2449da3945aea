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
