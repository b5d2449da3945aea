"""Table 4: feed-forward design (SwiGLU, GeLU, single linear layer, attention-only)."""
from jaxsink.experiments import Claim, PaperRow


TITLE = "Table 4 - feed-forward block design"
PAPER = {"gelu": PaperRow(10.1, 69.3, 3369), "linear": PaperRow(12.5, 58.9, 688), "attention": PaperRow(10.8, 73.9, 637),
         "swiglu": PaperRow(10.1, 46.0, 3818)}


# Section 4.2.1 claims (Claim: text, metric, a, relation, b); judged by jaxsink.claims
CLAIMS = [
    Claim("A linear FFN gives a lower spike than SwiGLU (5.5x)", "spike", "linear", "<", "swiglu"),
    Claim("Attention-only blocks give a lower spike than SwiGLU (6x)", "spike", "attention", "<", "swiglu"),
    Claim("GeLU grows a spike like SwiGLU's", "spike", "gelu", "~", "swiglu"),
    Claim("Sinks appear with GeLU as with SwiGLU", "sink_ratio", "gelu", "kept", "swiglu"),
    Claim("Sinks appear with attention-only blocks", "sink_ratio", "attention", "kept", "swiglu"),
    Claim("Perplexity is unchanged by GeLU", "perplexity", "gelu", "~", "swiglu"),
]


def variants(scale, base):
    return {name: [f"model.ffn={name}"] for name in ("swiglu", "gelu", "linear", "attention")}
