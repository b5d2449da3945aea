"""The probe's trigger analysis (review P2.8-P2.9): S_k's eigen-spectrum at every step-up and step-down FFN
block for the largest spike channels, and the first token's affine W_VO map with its alignment to s*."""
from __future__ import annotations

import numpy as np

from jaxsink.probe import stats
from jaxsink.stats.trigger import eigen_spectrum, trigger_alignment, w_vo_affine

EIGEN_CHANNELS = 8


def _ffn_weights(model, block: int):
    p = model.params["blocks"][block - 1]
    wg, wu, wd = (np.asarray(p["mixer"][k], np.float32) for k in ("w_gate", "w_up", "w_down"))
    if "norm_in" in p and "scale" in p["norm_in"] and model.spec.norm_type == "rmsnorm":
        wg, wu = stats.fold_norm_scale(p["norm_in"]["scale"], wg, wu)
    return wg, wu, wd


def eigen_at_blocks(model, result) -> dict:
    """{block: per-channel lambda1, lambda2, dominance and the mean |cos| between channels' s*} at the FFN
    blocks of every life cycle's step-ups and step-downs."""
    channels = result.get("spike_channels_by_magnitude", [])[:EIGEN_CHANNELS]
    roles = {}
    for cycle in result.get("life_cycles", []):
        for b in cycle["step_up"]:
            roles.setdefault(b, "step_up")
        for b in cycle["step_down"]:
            roles.setdefault(b, "step_down")
    out = {}
    for block, role in sorted(roles.items()):
        if model.spec.ffn != "swiglu" or block % 2 or not channels:
            continue
        wg, wu, wd = _ffn_weights(model, block)
        spectra = [eigen_spectrum(np.asarray(stats.u_matrix(wg, wu, wd, k))) for k in channels]
        out[block] = {"role": role, "channels": channels, "lambda1": [s["lambda1"] for s in spectra],
                      "lambda2": [s["lambda2"] for s in spectra], "dominance": [s["dominance"] for s in spectra],
                      "eigvec_alignment": float(stats.eigvec_alignment(np.stack([s["vector"] for s in spectra])))
                      if len(spectra) > 1 else None, "s_star": spectra[0]["vector"]}
    return out


def w_vo_record(model, result, p1, eigen: dict) -> dict | None:
    """W_VO of block 1 with gamma folded and the value bias, its spectral norm, and |cos| of the first
    token's attention output with s* of the first step-up FFN block's largest channel."""
    p = model.params["blocks"][0]
    attn = p["mixer"]
    gamma = p.get("norm_in", {}).get("scale") if model.spec.norm_type == "rmsnorm" else None
    w, b = w_vo_affine(attn["wv"], attn["wo"], gamma, attn.get("bv"))
    rec = {"spectral_norm": float(np.linalg.norm(w, 2)), "value_bias": "bv" in attn, "gamma_folded": gamma is not None,
           "gated": model.spec.gate != "none"}
    ups = [b_ for b_, e in sorted(eigen.items()) if e["role"] == "step_up"]
    if ups:
        x = np.asarray(p1["blocks"][1]["normed_pos0"], np.float64).mean(0)
        if gamma is not None:
            x = x / np.where(np.abs(np.asarray(gamma)) > 1e-12, np.asarray(gamma, np.float64), 1.0)
        x = np.asarray(stats.rms_normalize(x), np.float64)
        rec.update(trigger_alignment(x, w, b, eigen[ups[0]]["s_star"]), s_star_block=ups[0],
                   s_star_channel=eigen[ups[0]]["channels"][0])
    return rec


def trigger_analysis(model, result, p1) -> dict:
    eigen = eigen_at_blocks(model, result)
    rec = {"eigen": eigen, "w_vo": w_vo_record(model, result, p1, eigen)}
    for e in eigen.values():
        e.pop("s_star")
    return rec
