"""jaxsink: massive activations ("spikes") and attention sinks in Llama-style LMs (Sun et al. 2026).

`LAYERS` is the package's architecture: each stage hands the next one typed objects (a config, a
`ModelSpec`, a `LoadedModel`, a `ProbeResult`), and a module imports only from its own package or from a
lower layer (checked by `tests/test_layering.py`, function-local imports included).
"""

# lowest first; the packages of one layer do not import each other
LAYERS = (
    ("jaxsink.jsonio",),                                    # JSON-ready values (NaN, numpy, int keys)
    ("jaxsink.model.spec",),                                # the one model schema and its validation
    ("jaxsink.config",),                                    # the run config: schema, overrides, validation
    ("jaxsink.configs", "jaxsink.model.interventions"),     # shipped configs; probe edits of the forward pass
    ("jaxsink.data", "jaxsink.model", "jaxsink.stats"),     # text and tokens; the Transformer; statistics
    ("jaxsink.sharding", "jaxsink.workdir"),                # mesh and shardings; workdir bookkeeping
    ("jaxsink.train", "jaxsink.importers"),                 # training; pretrained checkpoints -> LoadedModel
    ("jaxsink.probe",),                                     # the probe of a LoadedModel -> ProbeResult
    ("jaxsink.experiments",),                               # the paper's tables: variants, PaperRow, Claim
    ("jaxsink.claims",),                                    # claims judged on results
    ("jaxsink.report", "jaxsink.restate", "jaxsink.calibrate"),   # results.json, report.md, reproduction
                                                            # record; an old record restated; seed spread
    ("jaxsink.sweep",),                                     # train and probe every variant of a table
    ("jaxsink.cli",),                                       # the command line
    ("jaxsink",),                                           # this file: the public API
)
