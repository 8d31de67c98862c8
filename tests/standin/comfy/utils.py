"""Stand-in of the parts of comfy/utils.py the sampling path and the pack use.

ProgressBar keeps the real global-hook mechanism (``set_progress_bar_global_hook``) so a test can observe
updates; the real server hook is what checks interrupts, so ``update`` does not raise here either.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PROGRESS_BAR_ENABLED = True
PROGRESS_BAR_HOOK = None


def set_progress_bar_enabled(enabled):
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function):
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value):
        self.update_absolute(self.current + value)


def set_attr(obj, attr: str, value):
    """Set a dotted attribute, returning the previous value (real comfy.utils.set_attr)."""
    names = attr.split(".")
    for name in names[:-1]:
        obj = getattr(obj, name)
    prev = getattr(obj, names[-1])
    setattr(obj, names[-1], value)
    return prev


def get_attr(obj, attr: str):
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def repeat_to_batch_size(tensor, batch_size, dim=0):
    """Tile along ``dim`` up to batch_size (cut when longer), like real: [a, b] -> [a, b, a] for 3."""
    n = tensor.shape[dim]
    if n > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if n < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = math.ceil(batch_size / n)
        return tensor.repeat(reps).narrow(dim, 0, batch_size)
    return tensor


def reshape_mask(input_mask, output_shape):
    """(B?, H, W) mask -> (B, C, h, w) for a 4-D latent shape (bilinear, channel-repeated, batch-tiled)."""
    if len(output_shape) != 4:
        raise NotImplementedError("stand-in: only 2-D latents")
    m = input_mask.reshape((-1, 1, input_mask.shape[-2], input_mask.shape[-1]))
    m = F.interpolate(m, size=tuple(output_shape[2:]), mode="bilinear")
    if m.shape[1] < output_shape[1]:
        m = m.repeat(1, output_shape[1], 1, 1)[:, :output_shape[1]]
    return repeat_to_batch_size(m, output_shape[0])


def common_upscale(samples, width, height, upscale_method, crop):
    """Resize (B, C, H, W) to (height, width); only crop="disabled"/"none"/"center" and torch modes."""
    if crop == "center":
        ow, oh = samples.shape[-1], samples.shape[-2]
        old_aspect, new_aspect = ow / oh, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((ow - ow * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((oh - oh * (old_aspect / new_aspect)) / 2)
        samples = samples.narrow(-2, y, oh - y * 2).narrow(-1, x, ow - x * 2)
    mode = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic"}.get(
        upscale_method, "bilinear")
    return F.interpolate(samples, size=(height, width), mode=mode)
