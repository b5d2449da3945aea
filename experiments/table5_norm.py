"""Table 5: normalisation configuration (+ post-norm and no norm as extensions)."""
from jaxsink.experiments import Claim, PaperRow


TITLE = "Table 5 - normalisation configuration"
PAPER = {"pre": PaperRow(10.1, 46.0, 3818), "sandwich": PaperRow(9.8, 44.7, 520), "sandwich_qk": PaperRow(10.0, 42.0, 92),
         "dyt": PaperRow(10.0, 61.0, 153)}


# Section 4.2.2 claims (Claim: text, metric, a, relation, b); judged by jaxsink.claims
CLAIMS = [
    Claim("Sandwich norm cuts the spike (7x)", "spike", "sandwich", "<", "pre"),
    Claim("Sandwich + QK-norm cuts the spike (41x)", "spike", "sandwich_qk", "<", "pre"),
    Claim("DynamicTanh cuts the spike (25x)", "spike", "dyt", "<", "pre"),
    Claim("Sandwich norm keeps the sinks", "sink_ratio", "sandwich", "kept", "pre"),
    Claim("Sandwich + QK-norm keeps the sinks", "sink_ratio", "sandwich_qk", "kept", "pre"),
    Claim("DynamicTanh gives more sinks than pre-norm", "sink_ratio", "dyt", ">", "pre"),
    Claim("Perplexity is unchanged by sandwich norm", "perplexity", "sandwich", "~", "pre"),
    Claim("Perplexity is unchanged by sandwich + QK-norm", "perplexity", "sandwich_qk", "~", "pre"),
    Claim("Perplexity is unchanged by DynamicTanh", "perplexity", "dyt", "~", "pre"),
]


def variants(scale, base):
    return {
        "pre": ["model.norm_placement=pre"],
        "sandwich": ["model.norm_placement=sandwich"],
        "sandwich_qk": ["model.norm_placement=sandwich_qk"],
        "dyt": ["model.norm_placement=pre", "model.norm_type=dyt"],
        "post": ["model.norm_placement=post"],
        "none": ["model.norm_placement=none"],
    }
