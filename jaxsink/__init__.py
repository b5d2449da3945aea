"""jaxsink: massive activations ("spikes") and attention sinks in Llama-style LMs (Sun et al. 2026).

The public API is below (`__all__`; imported on first use, so `import jaxsink` stays cheap). A model, a
forward pass that captures attention, and the paper's first-token mass per head (App. A):

>>> import jax.numpy as jnp, jaxsink
>>> spec = jaxsink.ModelSpec(vocab_size=264, n_layers=1, d_model=32, n_heads=4, d_head=8, d_ff=64)
>>> logits, inter = jaxsink.forward(jaxsink.build(spec), jnp.zeros((2, 16), jnp.int32), capture=("attn_probs",))
>>> heads = jaxsink.stats.head_stats(jaxsink.collect(inter, spec.n_blocks)["attn_probs"][1])
>>> heads["first_token_mass"].shape      # [sequences, heads]
(2, 4)

Trained or imported models load as a `LoadedModel` (`load_trained(workdir)`, `load_hf(dir)`,
`load_gguf(file)`) and `run_probe(model, text, out_dir)` returns a `ProbeResult`.

`LAYERS` is the package's architecture: each stage hands the next one typed objects (a config, a
`ModelSpec`, a `LoadedModel`, a `ProbeResult`), and a module imports only from its own package or from a
lower layer (checked by `tests/test_layering.py`, function-local imports included).
"""

# lowest first; the packages of one layer do not import each other
LAYERS = (
    ("jaxsink.notice", "jaxsink.cpu_malloc",                # the SIGTERM notice; glibc malloc and the
     "jaxsink.cpu_scheduler"),                              # scheduler for XLA CPU (standard library only)
    ("jaxsink.jsonio", "jaxsink.supervise",                 # JSON-ready values; the multi-process supervisor;
     "jaxsink.cpu_setup"),                                  # both CPU settings at once
    ("jaxsink.model.spec",),                                # the one model schema and its validation
    ("jaxsink.config",),                                    # the run config: schema, overrides, validation
    ("jaxsink.configs", "jaxsink.model.interventions",      # shipped configs; probe edits of the forward pass;
     "jaxsink.topology"),                                   # TPU/CPU topologies and chip figures
    ("jaxsink.data", "jaxsink.model", "jaxsink.stats"),     # text and tokens; the Transformer; statistics
    ("jaxsink.sharding", "jaxsink.workdir"),                # mesh and shardings; workdir bookkeeping
    ("jaxsink.train", "jaxsink.importers"),                 # training; pretrained checkpoints -> LoadedModel
    ("jaxsink.probe",),                                     # the probe of a LoadedModel -> ProbeResult
    ("jaxsink.aot", "jaxsink.impact"),                      # compile for a topology; deployment costs
    ("jaxsink.experiments",),                               # the paper's tables: variants, PaperRow, Claim
    ("jaxsink.claims",),                                    # claims judged on results
    ("jaxsink.report", "jaxsink.restate", "jaxsink.calibrate",   # results.json, report.md, reproduction
     "jaxsink.bb_dynamics"),                                # record; restated record; seed spread; BB plots
    ("jaxsink.sweep",),                                     # train and probe every variant of a table
    ("jaxsink.bb_seeds",),                                  # the Bigram-Backcopy testbed's seeded claims, demo
    ("jaxsink.bb_impact",),                                 # the testbed's deployment costs, judged over seeds
    ("jaxsink.cli",),                                       # the command line
    ("jaxsink", "jaxsink.entry"),                           # this file: the public API; the console script
)

# public name -> (module that defines it, its name there); a module of this package: (module, None). Functions
# named like a subpackage (train, probe, sweep) are exported as run_*: `jaxsink.train` is the package.
_EXPORTS = {
    **{name: ("jaxsink.model", name) for name in ("ModelSpec", "build", "forward", "apply", "collect")},
    "Interventions": ("jaxsink.model.interventions", "Interventions"),
    "LoadedModel": ("jaxsink.model.loaded", "LoadedModel"),
    "load_hf": ("jaxsink.importers", "load_hf"), "load_gguf": ("jaxsink.importers", "load_gguf"),
    **{name: ("jaxsink.config", name) for name in ("load_config", "validate", "ConfigError")},
    "load_trained": ("jaxsink.train.setup", "load_trained"), "run_training": ("jaxsink.train.loop", "train"),
    "run_probe": ("jaxsink.probe.pipeline", "probe"), "ProbeOptions": ("jaxsink.probe.pipeline", "ProbeOptions"),
    "ProbeResult": ("jaxsink.probe.result", "ProbeResult"), "run_sweep": ("jaxsink.sweep", "sweep"),
    "stats": ("jaxsink.stats", None), "experiments": ("jaxsink.experiments", None),
}
__all__ = sorted(_EXPORTS) + ["LAYERS"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'jaxsink' has no attribute {name!r}")
    import importlib
    module, attribute = _EXPORTS[name]
    module = importlib.import_module(module)
    return module if attribute is None else getattr(module, attribute)


def __dir__() -> list[str]:
    return __all__
