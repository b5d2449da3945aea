"""The probe's trigger analysis (review P2.8-P2.9): S_k's eigen-spectrum at every step-up and step-down FFN
block for the largest spike channels, and the first token's affine W_VO map with its alignment to s*."""
from __future__ import annotations

import numpy as np

from jaxsink import stats
from jaxsink.model.layers import rms_normalize
from jaxsink.model.loaded import LoadedModel
from jaxsink.probe.result import EigenSpectrum, LifeCycle, WVo
from jaxsink.stats.trigger import eigen_spectrum, trigger_alignment, w_vo_affine

EIGEN_CHANNELS = 8


def folded_ffn_weights(model: LoadedModel, block: int) -> tuple:
    """(w_gate, w_up, w_down) of a SwiGLU block, float32, with the input RMSNorm's scale folded into
    w_gate and w_up (what U_k and S_k are built from, Eq. 18-20)."""
    w = model.ffn_weights(block)
    wg, wu, wd = (np.asarray(w[k], np.float32) for k in ("w_gate", "w_up", "w_down"))
    gamma = model.input_norm_scale(block)
    if gamma is not None:
        wg, wu = stats.fold_norm_scale(gamma, wg, wu)
    return wg, wu, wd


def _cycle_roles(cycles: list[LifeCycle]) -> dict[int, str]:
    roles = {}
    for cycle in cycles:
        for b in cycle.step_up:
            roles.setdefault(b, "step_up")
        for b in cycle.step_down:
            roles.setdefault(b, "step_down")
    return roles


def eigen_at_blocks(model: LoadedModel, channels_by_magnitude: list[int],
                    cycles: list[LifeCycle]) -> dict[int, EigenSpectrum]:
    """{block: S_k's lambda1, lambda2, dominance per channel and the mean |cos| between channels' s*} at the
    FFN blocks of every life cycle's step-ups and step-downs, for the largest spike channels."""
    channels = channels_by_magnitude[:EIGEN_CHANNELS]
    out = {}
    for block, role in sorted(_cycle_roles(cycles).items()):
        if model.spec.ffn != "swiglu" or block % 2 or not channels:
            continue
        wg, wu, wd = folded_ffn_weights(model, block)
        spectra = [eigen_spectrum(np.asarray(stats.u_matrix(wg, wu, wd, k))) for k in channels]
        alignment = float(stats.eigvec_alignment(np.stack([s["vector"] for s in spectra]))) \
            if len(spectra) > 1 else None
        out[block] = EigenSpectrum(role=role, channels=list(channels), lambda1=[s["lambda1"] for s in spectra],
                                   lambda2=[s["lambda2"] for s in spectra],
                                   dominance=[s["dominance"] for s in spectra], eigvec_alignment=alignment,
                                   s_star=spectra[0]["vector"])
    return out


def w_vo_record(model: LoadedModel, block_stats: dict, eigen: dict[int, EigenSpectrum]) -> WVo:
    """W_VO of block 1 with gamma folded and the value bias, its spectral norm, and |cos| of the first
    token's attention output with s* of the first step-up FFN block's largest channel."""
    attn = model.attn_weights(1)
    gamma = model.input_norm_scale(1)
    w, b = w_vo_affine(attn["wv"], attn["wo"], gamma, attn.get("bv"))
    rec = WVo(spectral_norm=float(np.linalg.norm(w, 2)), value_bias="bv" in attn, gamma_folded=gamma is not None,
              gated=model.spec.gate != "none")
    ups = [block for block, e in sorted(eigen.items()) if e.role == "step_up"]
    if ups:
        x = np.asarray(block_stats["blocks"][1]["normed_pos0"], np.float64).mean(0)
        if gamma is not None:     # the captured input is RMSNorm(h0) * gamma; W_VO has gamma folded in
            g = np.asarray(gamma, np.float64)
            x = x / np.where(np.abs(g) > 1e-12, g, 1.0)
        x = np.asarray(rms_normalize(x, model.spec.norm_eps), np.float64)
        a = trigger_alignment(x, w, b, eigen[ups[0]].s_star)
        rec.abs_cos_with_s_star, rec.gain, rec.chance_abs_cos = a["abs_cos_with_s_star"], a["gain"], a["chance_abs_cos"]
        rec.s_star_block, rec.s_star_channel = ups[0], eigen[ups[0]].channels[0]
    return rec
