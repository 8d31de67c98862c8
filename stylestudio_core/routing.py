"""Per-call attention routing: the one place where StyleStudio touches attention.

For each model call, the sampling mechanism (mechanism.py) builds a `CallPlan` and, in a *copy* of the call's
transformer_options, (a) puts an `IPRoute` in front of every IP-Adapter patch object found in the attn2 replace
slots and (b) appends the teacher patches to the attn1 (and attn2 output) patch lists. Nothing here is stored
in a model: routes are rebuilt every call, so wiring order, clone() deep copies and the `.to()` slot replacement
at model load never see them, and nothing is carried between runs.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

from .adain import cross_modal_adain
from .layout import RowLayout

log = logging.getLogger("StyleStudio")

PLAN_KEY = "stylestudio_plan"

# Class names under which IP-Adapter implementations put their patch objects into the attn2 replace slots:
# ComfyUI_IPAdapter_plus (`Attn2Replace`) and its older releases / forks (`CrossAttentionPatch`).
_IP_CLASS_NAMES = {"Attn2Replace", "CrossAttentionPatch"}


def has_callback_protocol(obj) -> bool:
    """True for patch objects that expose IPAdapter_plus's stacked-callback protocol (host.md §7), which lets
    us compute the text and IP outputs separately without any extra attention."""
    callbacks, kwargs = getattr(obj, "callback", None), getattr(obj, "kwargs", None)
    return (isinstance(callbacks, list) and isinstance(kwargs, list) and len(callbacks) == len(kwargs)
            and all(callable(c) for c in callbacks)
            and all(isinstance(k, dict) and "sigma_start" in k and "sigma_end" in k for k in kwargs))


def is_ip_patch(obj) -> bool:
    if isinstance(obj, IPRoute):
        return True
    if has_callback_protocol(obj):
        return True
    name = type(obj).__name__
    return name in _IP_CLASS_NAMES or "ipadapter" in (type(obj).__module__ or "").lower()


def ip_patch_keys(transformer_options: dict) -> list:
    slots = transformer_options.get("patches_replace", {}).get("attn2", {})
    return [k for k, v in slots.items() if is_ip_patch(v)]


def _sigma_of(extra_options: dict) -> float:
    # Same reading as IPAdapter_plus, so both agree on which callbacks are inside their window.
    sigmas = extra_options.get("sigmas")
    return sigmas.detach().cpu()[0].item() if sigmas is not None else 999999999.9


class CallPlan:
    """What StyleStudio does in one model call (one sigma). Read by the routes and patches via extra_options."""

    def __init__(self, *, has_teacher: bool = False, couple: bool = False, share_cross: bool = False,
                 adain_strength: float = 0.0, token_branch: dict | None = None, ip_keys=(),
                 attn1_replace_keys=()):
        self.has_teacher = has_teacher      # rows are [students | teachers] per chunk
        self.couple = couple                # teacher lends its self-attention this call
        self.share_cross = share_cross      # ...and its text cross-attention (fuAttn)
        self.adain_strength = adain_strength  # 0 = plain IP sum
        self.token_branch = token_branch or {}  # cond-list index -> IP token branch (0 cond, 1 uncond)
        self.ip_keys = set(ip_keys)
        self.attn1_replace_keys = set(attn1_replace_keys)  # other nodes' attn1 replace slots
        self._layouts: dict = {}

    def layout(self, rows: int, cond_or_uncond, device) -> RowLayout:
        key = (rows, tuple(cond_or_uncond), str(device))
        if key not in self._layouts:
            self._layouts[key] = RowLayout(rows, list(cond_or_uncond), self.has_teacher, device)
        return self._layouts[key]

    def ip_extra_options(self, extra_options: dict) -> dict:
        """extra_options as the IP-Adapter should see them: StyleStudio's extra guidance branch asks for the
        adapter's uncond (negative) style tokens, whatever index the branch has in the cond list."""
        cou = extra_options.get("cond_or_uncond")
        if not self.token_branch or cou is None or not any(i in self.token_branch for i in cou):
            return extra_options
        return {**extra_options, "cond_or_uncond": [self.token_branch.get(i, i) for i in cou]}


class IPRoute:
    """Sits in an attn2 replace slot for one call, in front of the IP-Adapter object that was there.

    Splits the layer's output into the text output T and the IP term S, then: teacher rows get T only (no
    style ever reaches the teacher), student rows get AdaIN(T, S) when AdaIN is on, else IP-Adapter's own sum.
    With nothing to do it calls the wrapped object unchanged, so its output is bit-identical.
    """

    _warned: set = set()

    def __init__(self, inner, plan: CallPlan, attention: Callable):
        self.inner = inner
        self.plan = plan
        self.attention = attention

    def __call__(self, q, k, v, extra_options):
        plan = self.plan
        eo_ip = plan.ip_extra_options(extra_options)
        layout = plan.layout(q.shape[0], extra_options["cond_or_uncond"], q.device)
        if not plan.has_teacher and plan.adain_strength == 0.0:
            return self.inner(q, k, v, eo_ip)

        text = self.attention(q, k, v, extra_options["n_heads"])
        if plan.has_teacher:
            rows = layout.student
            # IP callbacks see the student rows only: one user batch per chunk, so per-image weights and
            # masks line up with the user's images exactly as without the teacher.
            qs, ks, vs = q[rows], k[rows], v[rows]
            ts = text[layout.teacher] if (plan.couple and plan.share_cross) else text[rows]
        else:
            rows, qs, ks, vs, ts = None, q, k, v, text

        summed, ip = self._ip_term(ts, qs, ks, vs, eo_ip)
        if ip is None:
            student = ts
        elif plan.adain_strength != 0.0:
            student = cross_modal_adain(ts, ip, plan.adain_strength)
        else:
            student = summed
        if rows is None:
            return student.to(q.dtype)
        out = text.clone()
        out[rows] = student.to(out.dtype)
        return out.to(q.dtype)

    def _ip_term(self, text, q, k, v, extra_options):
        """(text + IP as IP-Adapter sums it, IP term or None when the adapter contributes nothing here)."""
        inner = self.inner
        if has_callback_protocol(inner):
            sigma = _sigma_of(extra_options)
            kwargs_for_device = inner.kwargs
            if hasattr(inner, "get_multigpu_kwargs"):  # IPAdapter_plus keeps per-device copies of its tensors
                kwargs_for_device = inner.get_multigpu_kwargs(q.device)
            summed, ip = text, None
            for callback, window, kwargs in zip(inner.callback, inner.kwargs, kwargs_for_device):
                if not (window["sigma_end"] <= sigma <= window["sigma_start"]):
                    continue
                term = callback(summed, q, k, v, extra_options, **kwargs)
                if isinstance(term, torch.Tensor):  # the integer 0 means "not this layer"
                    ip = term if ip is None else ip + term
                    summed = summed + term
            return summed, ip  # an all-zero IP term is handled by AdaIN itself (text kept), without a GPU sync
        # Unknown IP object: only its total output is available, so IP = total − text (one extra attention).
        name = type(inner).__name__
        if name not in IPRoute._warned:
            IPRoute._warned.add(name)
            log.warning("StyleStudio: IP-Adapter patch %s has an unknown layout; using the generic route "
                        "(IP term = patched output − text attention), which costs one extra attention.", name)
        total = inner(q, k, v, extra_options)
        ip = total - self.attention(q, k, v, extra_options["n_heads"])
        return total, ip

    def to(self, *args, **kwargs):
        return self  # never stored in a model, but harmless if something casts it


def _block_key_in(extra_options: dict, keys) -> bool:
    """Whether this block's patch key (3-tuple with block_index, or the 2-tuple fallback) is in `keys`."""
    block = extra_options.get("block")
    return block is not None and ((block[0], block[1], extra_options.get("block_index", 0)) in keys
                                  or tuple(block) in keys)


def teacher_attn1_patch(n, context, value, extra_options):
    """attn1_patch: student rows take the teacher's queries and keys, keep their own values, so ComfyUI's
    own attention computes Attn(Q_t, K_t, V_s) (method.md §3) with no attention map materialised."""
    plan: CallPlan = extra_options[PLAN_KEY]
    if not plan.couple:
        return n, context, value
    layout = plan.layout(n.shape[0], extra_options["cond_or_uncond"], n.device)
    borrowed = layout.borrow_teacher(n)
    # `value` still holds the student's own tokens: the block made it from the original `n`/`context`.
    if context is not n:
        return borrowed, layout.borrow_teacher(context), value
    if _block_key_in(extra_options, plan.attn1_replace_keys):
        return borrowed, borrowed, value  # a replace slot needs explicit context and value
    # context=None makes the attention take its keys from the query source (`borrowed`), as for plain
    # self-attention, so the block does not hold one more activation-sized tensor until it ends.
    return borrowed, None, value


def teacher_attn2_output_patch(n, extra_options):
    """attn2_output_patch (share_cross_attention): in layers without IP-Adapter, teacher and student attend
    the same text, so sharing the teacher's text attention map means taking its output as is."""
    plan: CallPlan = extra_options[PLAN_KEY]
    if not (plan.couple and plan.share_cross):
        return n
    if _block_key_in(extra_options, plan.ip_keys):
        return n  # the IPRoute already used the teacher's text output there
    layout = plan.layout(n.shape[0], extra_options["cond_or_uncond"], n.device)
    return layout.borrow_teacher(n)
