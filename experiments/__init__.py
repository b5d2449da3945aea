"""The paper's ablation tables as declarative sweeps (installed as `jaxsink.experiments`).

Each module defines `TITLE`, `PAPER` (the paper's Perplexity / Sink ratio % / Spike per variant, where it
has them) and `variants(scale) -> {name: [config overrides]}` for scale in `tiny`, `small`, `paper`.
Overrides are on top of the scale's base config (`jaxsink.sweep.BASES`). Every variant of one experiment
uses the same data order and seed.
"""
