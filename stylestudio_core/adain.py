"""Cross-modal AdaIN (method.md §1): the text output, normalised per row and channel over tokens, takes the
IP-Adapter output's token statistics, instead of having the IP output added to it."""
from __future__ import annotations

import torch


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

    This runs in every IP layer of every step, so it is written for few passes over (B, N, C) tensors: 9 at
    strength 1 in fp32 (10 below 1; +1 for the cast back in half precision), where the textbook form takes 21-24
    (tests/test_core_adain.py counts them with the profiler and keeps that form as the reference):
    * support: one count-nonzero reduction over channels;
    * statistics in fp32, in one masked pass each. The text is shifted by its first token before the moments
      are taken (a shift by any sample of the data keeps E[x²] − E[x]² well conditioned; it cancels exactly);
      the IP term is zero outside its support, so its masked mean is a plain sum, and its deviations are one
      fused `s − w·μ`;
    * the output: `(t − t₀)·a + b` on the support, t elsewhere, as one fused multiply-add and one select.
    Biased vs unbiased std does not matter: the Bessel factor cancels in σ(S)/σ(T).
    """
    b, n, c = text_out.shape
    f32 = torch.float32
    support = torch.linalg.vector_norm(ip_out, 0, dim=-1, keepdim=True, dtype=f32) > 0  # (B, N, 1)
    w = support.to(f32)
    count = w.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1, 1)

    # text: shifted masked moments (one mixed-dtype pass computes in fp32)
    t0 = text_out[:, :1].to(f32)
    y_t = (text_out - t0) * w
    var_all, mean_all = torch.var_mean(y_t, dim=1, keepdim=True, correction=0)
    ratio = n / count  # moments over the support from moments over all N tokens (y_t = 0 outside it)
    mean_y = mean_all * ratio
    var_t = ((var_all + mean_all.square()) * ratio - mean_y.square()).clamp(min=0.0)
    sigma_t = var_t.sqrt()
    mu_t = t0 + mean_y

    # IP term: zero outside its support, so the masked mean is a plain sum
    mu_s = ip_out.sum(dim=1, keepdim=True, dtype=f32) / count
    y_s = torch.addcmul(ip_out, w, mu_s, value=-1.0)
    sigma_s = torch.linalg.vector_norm(y_s, 2, dim=1, keepdim=True, dtype=f32) / count.sqrt()

    # A channel with constant text output has no shape to keep: it takes the IP mean (no 0/0).
    scale = torch.where(sigma_t > 0, sigma_s / sigma_t.clamp(min=torch.finfo(f32).tiny), 0.0)
    shift = mu_s - (mu_t - t0) * scale  # fused = (t − μt)·scale + μs = (t − t0)·scale + shift
    lam = float(strength)
    if lam == 1.0:
        inside = torch.addcmul(shift, y_t, scale)
    else:
        # (1 − λ)(t + s) + λ·fused on the support, with t = y_t + t0 there
        inside = torch.addcmul((1.0 - lam) * t0 + lam * shift, y_t, (1.0 - lam) + lam * scale)
        inside = inside.add_(ip_out, alpha=1.0 - lam)
    return torch.where(support, inside, text_out).to(text_out.dtype)
