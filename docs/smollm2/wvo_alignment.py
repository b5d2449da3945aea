"""Supplement to docs/smollm2.md: |cos(W_VO x0 + b, s*)| of block 1 against s* of every step-up and step-down
block of both life cycles (probe.json records it against the first step-up block only), for the mean input
(as the probe computes it) and per window. Run from the repository root after the probe:

    python docs/smollm2/wvo_alignment.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import sys

import numpy as np

from jaxsink import stats
from jaxsink.data import load_corpus
from jaxsink.importers import load_gguf
from jaxsink.model.layers import rms_normalize
from jaxsink.probe import mechanism_pass
from jaxsink.probe.sampling import sample_windows
from jaxsink.stats.trigger import eigen_spectrum, trigger_alignment, w_vo_affine

model = load_gguf(sys.argv[1])
probed = json.load(open("docs/smollm2/probe.json"))
text = "\n\n".join(load_corpus("shakespeare"))
sample = sample_windows(model.tokenizer.encode(text), 64, 64, False, model.tokenizer.bos_id, seed=0, method="random")
assert list(sample.record().chunk_indices) == probed["sample"]["chunk_indices"], "not the probe's windows"
emb = model.params["embed"]
emb = np.asarray(emb["embedding"] if isinstance(emb, dict) else emb, np.float64)
xs = np.asarray(rms_normalize(emb[sample.tokens[:, 0]], model.spec.norm_eps), np.float64)   # block 1 input, pos 0
x_mean = np.asarray(rms_normalize(xs.mean(0), model.spec.norm_eps), np.float64)
attn = model.attn_weights(1)
w, b = w_vo_affine(attn["wv"], attn["wo"], model.input_norm_scale(1), attn.get("bv"))
for block in (6, 20, 24, 58, 60):
    wg, wu, wd = mechanism_pass.folded_ffn_weights(model, block)
    for channel in (507, 247):
        spectrum = eigen_spectrum(np.asarray(stats.u_matrix(wg, wu, wd, channel)))
        mean_input = trigger_alignment(x_mean, w, b, spectrum["vector"])
        per = [trigger_alignment(x, w, b, spectrum["vector"])["abs_cos_with_s_star"] for x in xs]
        print(f"block {block} channel {channel}: |cos| {mean_input['abs_cos_with_s_star']:.4f} (mean input), "
              f"per window {np.mean(per):.4f} [{np.min(per):.4f}, {np.max(per):.4f}], dominance "
              f"{spectrum['dominance']:.2f}, gain {mean_input['gain']:.3f}, chance {mean_input['chance_abs_cos']:.4f}")
