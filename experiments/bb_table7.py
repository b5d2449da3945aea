"""Table 7 on Guo et al.'s Bigram-Backcopy testbed (`--scale bb`): conditional output gates (which can shut a
head off per query) should remove the BOS sink and its massive activation; unconditional gates should not
(§4.3.2). One head, so the per-head gate is one scalar per token. Judged over seeds by
`python -m jaxsink.bb_seeds bb_table7`."""
from jaxsink.experiments import table7_gates

TITLE = "Table 7 on Bigram-Backcopy - gated attention: which gates remove the BOS sink?"
GATES = ("none", "cond_channel", "cond_head", "uncond_channel", "uncond_head")
PAPER = {k: table7_gates.PAPER[k] for k in GATES}
CLAIMS = [c for c in table7_gates.CLAIMS if c[2] in PAPER and c[4] in PAPER]

BOS_CLAIMS = [
    ("A conditional per-channel gate removes the BOS sink", "removes_sink", "cond_channel", "none"),
    ("A conditional per-head gate removes the BOS sink", "removes_sink", "cond_head", "none"),
    ("A conditional per-channel gate cuts the massive activation", "cuts_spike", "cond_channel", "none"),
    ("A conditional per-head gate cuts the massive activation", "cuts_spike", "cond_head", "none"),
    ("An unconditional per-channel gate keeps the BOS sink", "keeps_sink", "uncond_channel", "none"),
    ("An unconditional per-head gate keeps the BOS sink", "keeps_sink", "uncond_head", "none"),
]

# (text, figure, relation, a, b): deployment costs judged over seeds by `jaxsink.bb_impact` (rules there);
# b None compares a's figure with 0. Written before the seeds were run.
IMPACT_CLAIMS = [
    ("Window-only eviction (8-token cache) costs the ungated model perplexity", "window_cost", ">", "none", None),
    ("Window-only eviction costs the ungated model more than a conditional per-channel gate", "window_cost", ">",
     "none", "cond_channel"),
    ("Window-only eviction costs the ungated model more than a conditional per-head gate", "window_cost", ">",
     "none", "cond_head"),
    ("Window-only eviction costs a conditional per-channel gate nothing", "window_cost", "~", "cond_channel", None),
    ("Window-only eviction costs a conditional per-head gate nothing", "window_cost", "~", "cond_head", None),
    ("Window-only eviction costs an unconditional per-channel gate perplexity (it keeps the sink)", "window_cost",
     ">", "uncond_channel", None),
    ("Window-only eviction costs an unconditional per-head gate perplexity (it keeps the sink)", "window_cost", ">",
     "uncond_head", None),
    ("A conditional per-channel gate loses less than the ungated model under per-tensor A4", "a4_tensor_cost", "<",
     "cond_channel", "none"),
    ("A conditional per-head gate loses less than the ungated model under per-tensor A4", "a4_tensor_cost", "<",
     "cond_head", "none"),
]


def variants(scale, base):
    return {gate: [f"model.gate={gate}"] for gate in GATES}
