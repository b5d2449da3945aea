"""Table 7: gated attention (Qiu et al. G1 position: a sigmoid gate on the SDPA output before W_O)."""
from jaxsink.experiments import Claim, PaperRow


TITLE = "Table 7 - gated attention"
PAPER = {
    "cond_channel": PaperRow(10.0, 4.5, 202), "cond_head": PaperRow(10.1, 6.4, 186), "cond_single": PaperRow(10.2, 31.2, 316),
    "uncond_channel": PaperRow(10.1, 42.2, 1922), "uncond_head": PaperRow(10.1, 41.3, 1884), "uncond_single": PaperRow(10.2, 44.3, 1797),
    "static_position": PaperRow(10.1, 41.1, 1755), "static_token": PaperRow(10.0, 31.1, 1966), "none": PaperRow(10.1, 46.0, 3818),
}


# Section 4.3.2 claims (Claim: text, metric, a, relation, b); judged by jaxsink.claims
CLAIMS = [
    Claim("A conditional per-channel gate removes sinks", "sink_ratio", "cond_channel", "<", "none"),
    Claim("A conditional per-head gate removes sinks", "sink_ratio", "cond_head", "<", "none"),
    Claim("A conditional per-channel gate cuts the spike", "spike", "cond_channel", "<", "none"),
    Claim("A conditional per-head gate cuts the spike", "spike", "cond_head", "<", "none"),
    Claim("A single gate per token keeps more sinks than per-channel", "sink_ratio", "cond_single", ">", "cond_channel"),
    Claim("Unconditional gates keep the sinks", "sink_ratio", "uncond_channel", "kept", "none"),
    Claim("Static (token-embedding) gates keep the sinks", "sink_ratio", "static_token", "kept", "none"),
    Claim("Perplexity is unchanged by a conditional per-channel gate", "perplexity", "cond_channel", "~", "none"),
]


def variants(scale, base):
    return {gate: [f"model.gate={gate}"] for gate in PAPER}
