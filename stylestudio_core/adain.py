"""Cross-modal AdaIN (method.md §1): the text output, normalised per row and channel over tokens, takes the
IP-Adapter output's token statistics, instead of having the IP output added to it."""
from __future__ import annotations

import torch


def _token_stats(x: torch.Tensor, weight: torch.Tensor, count: torch.Tensor):
    """Mean and biased std over tokens (dim 1) per row and channel, in fp32, over the tokens where weight = 1.

    Biased vs unbiased does not matter: the Bessel factor cancels in AdaIN (σ(S)/σ(T))."""
    mean = (x * weight).sum(dim=1, keepdim=True) / count
    var = ((x - mean).square() * weight).sum(dim=1, keepdim=True) / count
    return mean, var.sqrt()


def cross_modal_adain(text_out: torch.Tensor, ip_out: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """`AdaIN(text_out, ip_out)` blended with the plain IP-Adapter sum.

    text_out, ip_out: (B, N, C) attention outputs of one cross-attention layer (heads merged, before to_out);
    ip_out already carries the adapter weight and mask (as IP-Adapter implementations return it).
    strength: 1 = the paper's AdaIN, 0 = the plain sum `text_out + ip_out`, linear in between.

    Tokens where the IP output is exactly zero over every channel are treated as *outside* the IP contribution
    (an attention mask, or an adapter that is inactive for that row): statistics are taken over the other
    tokens only, and those tokens keep the plain sum (= text_out). A row with no IP contribution at all
    returns its text output unchanged, where plain AdaIN would erase it (σ(S)=0 ⇒ out = μ(S)).
    No branch depends on tensor values, so nothing waits for the GPU.
    """
    t = text_out.float()
    s = ip_out.float()
    support = (s != 0).any(dim=-1, keepdim=True)  # (B, N, 1)
    weight = support.to(t.dtype)
    count = weight.sum(dim=1, keepdim=True).clamp(min=1.0)

    mu_t, sigma_t = _token_stats(t, weight, count)
    mu_s, sigma_s = _token_stats(s, weight, count)
    # A channel with constant text output has no shape to keep: it takes the IP mean (no 0/0).
    normalised = torch.where(sigma_t > 0, (t - mu_t) / sigma_t.clamp(min=torch.finfo(t.dtype).tiny), 0.0)
    fused = normalised * sigma_s + mu_s

    plain = t + s
    if strength != 1.0:
        fused = torch.lerp(plain, fused, float(strength))
    return torch.where(support, fused, plain).to(text_out.dtype)
