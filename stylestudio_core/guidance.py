"""Style-based CFG with separate text and style scales (method.md §2, "beyond the paper").

    ε̂ = ε(∅t, s⁻) + g_text·(ε(t, s⁻) − ε(∅t, s⁻)) + g_style·(ε(t, s⁺) − ε(t, s⁻))

ComfyUI's CFG already gives `uncond + g_text·(cond − uncond)` with cond = ε(t, s⁺) and uncond = ε(∅t, s⁻), which
is the formula with g_style = g_text. So the split only adds `(g_style − g_text)·(cond − ε(t, s⁻))`, where
ε(t, s⁻) is the prompt with the negative (uncond) style tokens: one extra branch, and none when the scales agree.
The formula is linear, so it holds for x0 (denoised) predictions exactly as for ε.
"""
from __future__ import annotations

import torch


def split_scale_correction(denoised: torch.Tensor, cond: torch.Tensor, cond_style_negative: torch.Tensor,
                           text_scale: float, style_scale: float) -> torch.Tensor:
    """Turn an ordinary CFG result (`uncond + text_scale·(cond − uncond)`) into the split-scale result."""
    if style_scale == text_scale:
        return denoised
    return denoised + (style_scale - text_scale) * (cond - cond_style_negative)


def split_scale_guidance(uncond: torch.Tensor, cond_style_negative: torch.Tensor, cond: torch.Tensor,
                         text_scale: float, style_scale: float) -> torch.Tensor:
    """The formula written out in full (the reference the tests compare against)."""
    return (uncond + text_scale * (cond_style_negative - uncond)
            + style_scale * (cond - cond_style_negative))
