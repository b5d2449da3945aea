"""Where the sink ratio means anything: Eq. 28 flags a head when some key k < T/2 gets mean attention
alpha_k > eps. Uniform causal attention (A[t, k] = 1 / (t + 1)) already gives alpha_0 = H_T / T (H_T the T-th
harmonic number), so at T where H_T / T > eps every near-uniform head is a "sink": at eps 0.3 that is
T <= 9 (H_9 / 9 = 0.31, H_10 / 10 = 0.29). Table 8's 1/256 row at tiny scale trains at seq_len 8 (review P1.6)."""
from __future__ import annotations


def uniform_alpha0(t: int) -> float:
    """alpha_0 of uniform causal attention over T positions: (1/T) sum_{t=1..T} 1/t = H_T / T."""
    return sum(1.0 / i for i in range(1, t + 1)) / t


def sink_ratio_defined(t: int, eps: float) -> bool:
    """True when uniform attention stays at or below eps at T, so a flagged head is more than uniform."""
    return uniform_alpha0(t) <= eps


def undefined_reason(t: int, eps: float) -> str:
    return (f"sink ratio undefined at T = {t}: uniform causal attention already puts H_T/T = "
            f"{uniform_alpha0(t):.2f} > eps {eps} on key 0")
