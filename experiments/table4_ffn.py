"""Table 4: feed-forward design (SwiGLU, GeLU, single linear layer, attention-only)."""

TITLE = "Table 4 - feed-forward block design"
PAPER = {"gelu": (10.1, 69.3, 3369), "linear": (12.5, 58.9, 688), "attention": (10.8, 73.9, 637),
         "swiglu": (10.1, 46.0, 3818)}


# Section 4.2.1 claims: (text, metric, a, relation, b); judged by jaxsink.claims
CLAIMS = [
    ("A linear FFN gives a lower spike than SwiGLU (5.5x)", "spike", "linear", "<", "swiglu"),
    ("Attention-only blocks give a lower spike than SwiGLU (6x)", "spike", "attention", "<", "swiglu"),
    ("GeLU grows a spike like SwiGLU's", "spike", "gelu", "~", "swiglu"),
    ("Sinks appear with GeLU as with SwiGLU", "sink_ratio", "gelu", "~", "swiglu"),
    ("Sinks appear with attention-only blocks", "sink_ratio", "attention", "~", "swiglu"),
]


def variants(scale, base):
    return {name: [f"model.ffn={name}"] for name in ("swiglu", "gelu", "linear", "attention")}
