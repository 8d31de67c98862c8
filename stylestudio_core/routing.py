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
    # Only for a CallPlan built without its sigma (tests): the mechanism gives every plan the call's sigma, so
    # the layers never read it back from the device. Same reading as IPAdapter_plus.
    sigmas = extra_options.get("sigmas")
    return sigmas.detach().cpu()[0].item() if sigmas is not None else 999999999.9


# ------------------------------------------------------------------------------------- style or identity
STYLE, IDENTITY = "style", "identity"
#: A callback's kwargs may say what it is: adapters written for StyleStudio set it (the pack's own adapter does).
ROLE_KEY = "stylestudio_role"
#: Settings entry (model_options["transformer_options"]["stylestudio"]["roles"]) with the user's choice, see
#: nodes/patching.py `adapter_roles`: {"default": None|"style"|"identity", "by_position": {1: "identity", ...}}.
ROLES_SETTING = "roles"

# IPAdapter_plus's projection models of its face-ID family (FaceID, FaceID Plus / Plus v2, Kolors FaceID).
_FACE_PROJECTIONS = {"MLPProjModelFaceId", "ProjModelFaceIdPlus"}
# Other packs that use IPAdapter_plus's callback protocol for identity (cubiq's PuLID_ComfyUI puts its model
# under "pulid", ComfyUI_InstantID its InstantID model under "ipadapter"; their callbacks are named after them).
_IDENTITY_WORDS = ("pulid", "instantid", "faceid", "photomaker", "ecomid")


def detected_role(callback, kwargs: dict) -> str | None:
    """What a stacked callback says or shows it is, or None when it cannot tell (then the user's choice, else
    style, decides). Reads only what is there: a missing attribute never raises."""
    declared = kwargs.get(ROLE_KEY)
    if declared in (STYLE, IDENTITY):
        return declared
    if "pulid" in kwargs or "instantid" in kwargs:
        return IDENTITY
    name = f"{getattr(callback, '__module__', '') or ''}.{getattr(callback, '__name__', '') or ''}".lower()
    if any(word in name for word in _IDENTITY_WORDS):
        return IDENTITY
    module = kwargs.get("ipadapter")
    if module is not None:
        kind = type(module).__name__.lower()
        if any(word in kind for word in _IDENTITY_WORDS):
            return IDENTITY
        # IPAdapter_plus's IPAdapter: FaceID models have a face-ID projection; "portrait" (unnorm) and full-face
        # models are flagged on the module (is_portrait_unnorm, is_full: the full-face SD1.5 adapter is its only
        # MLPProjModel model).
        projection = type(getattr(module, "image_proj_model", None)).__name__
        if projection in _FACE_PROJECTIONS:
            return IDENTITY
        if any(getattr(module, flag, False) is True for flag in ("is_faceid", "is_portrait", "is_portrait_unnorm",
                                                                 "is_full")):
            return IDENTITY
    return None


def callback_role(callback, kwargs: dict, position: int, roles: dict | None) -> str:
    """Style or identity for the callback at `position` (1-based, the order the adapters were applied to the
    model). The user's per-position choice wins, then what the callback declares or shows, then the user's
    default for undecided ones, then style."""
    roles = roles or {}
    chosen = (roles.get("by_position") or {}).get(position)
    if chosen in (STYLE, IDENTITY):
        return chosen
    return detected_role(callback, kwargs) or roles.get("default") or STYLE


# IPAdapter_plus's ipadapter_attention returns the integer 0 for a layer outside its weight map and for weight 0
# (host.md §7); knowing that before the call spares gathering rows for nothing. Only for that callback, and only
# when its weight type is one whose per-layer weight is the map itself (the ramp/"weak" types scale a float).
_FLOAT_WEIGHT_TYPES = {"ease in", "ease out", "ease in-out", "reverse in-out", "weak input", "weak output",
                       "weak middle", "strong middle"}


def _known_inactive(callback, kwargs: dict, extra_options: dict) -> bool:
    if getattr(callback, "__name__", None) != "ipadapter_attention":
        return False
    weight = kwargs.get("weight")
    if isinstance(weight, dict):
        return (kwargs.get("weight_type") not in _FLOAT_WEIGHT_TYPES
                and extra_options.get("transformer_index") not in weight)
    return type(weight) in (int, float) and weight == 0


class CallPlan:
    """What StyleStudio does in one model call (one sigma). Read by the routes and patches via extra_options."""

    def __init__(self, *, has_teacher: bool = False, couple: bool = False, share_cross: bool = False,
                 adain_strength: float = 0.0, token_branch: dict | None = None, ip_keys=(),
                 attn1_replace_keys=(), sigma: float | None = None, roles: dict | None = None,
                 layouts: dict | None = None):
        self.has_teacher = has_teacher      # rows are [students | teachers] per chunk
        self.couple = couple                # teacher lends its self-attention this call
        self.share_cross = share_cross      # ...and its text cross-attention (fuAttn)
        self.adain_strength = adain_strength  # 0 = plain IP sum
        self.token_branch = token_branch or {}  # cond-list index -> IP token branch (0 cond, 1 uncond)
        self.ip_keys = set(ip_keys)
        self.attn1_replace_keys = set(attn1_replace_keys)  # other nodes' attn1 replace slots
        self.sigma = sigma                  # this call's sigma, known on the host (no read-back per layer)
        self.roles = roles                  # the user's style/identity choice (ROLES_SETTING)
        self._layouts = layouts if layouts is not None else {}  # the run's cache when the mechanism gives one

    def layout(self, rows: int, cond_or_uncond, device=None) -> RowLayout:
        key = (rows, tuple(cond_or_uncond), self.has_teacher)
        found = self._layouts.get(key)
        if found is None:
            found = self._layouts[key] = RowLayout(rows, list(cond_or_uncond), self.has_teacher)
        return found

    def sigma_for(self, extra_options: dict) -> float:
        return self.sigma if self.sigma is not None else _sigma_of(extra_options)

    def ip_extra_options(self, extra_options: dict) -> dict:
        """extra_options as the IP-Adapter should see them: StyleStudio's extra guidance branch asks for the
        adapter's uncond (negative) style tokens, whatever index the branch has in the cond list."""
        cou = extra_options.get("cond_or_uncond")
        if not self.token_branch or cou is None or not any(i in self.token_branch for i in cou):
            return extra_options
        return {**extra_options, "cond_or_uncond": [self.token_branch.get(i, i) for i in cou]}


class IPRoute:
    """Sits in an attn2 replace slot for one call, in front of the IP-Adapter object that was there.

    Splits the layer's output into the text output T, the style terms S and the identity terms I (each stacked
    callback is one or the other, see `callback_role`), then: student rows get AdaIN(T, S) + I when AdaIN is on,
    else the adapters' own sum T + S + I; teacher rows get T + I (no style ever reaches the teacher; a face
    adapter keeps its person in the layout teacher). With nothing to do it calls the wrapped object unchanged,
    so its output is bit-identical; in a layer where no adapter is active it returns the text output as it is.
    """

    _warned: set = set()

    def __init__(self, inner, plan: CallPlan, attention: Callable):
        self.inner = inner
        self.plan = plan
        self.attention = attention

    def __call__(self, q, k, v, extra_options):
        plan = self.plan
        eo_ip = plan.ip_extra_options(extra_options)
        if not plan.has_teacher and plan.adain_strength == 0.0:
            return self.inner(q, k, v, eo_ip)
        layout = plan.layout(q.shape[0], extra_options["cond_or_uncond"])
        borrow_text = plan.has_teacher and plan.couple and plan.share_cross
        active = self._active(extra_options)
        text = self.attention(q, k, v, extra_options["n_heads"])
        if active is not None and not active:  # no adapter in this layer at this sigma
            return (layout.borrow_teacher(text) if borrow_text else text).to(q.dtype)

        # IP callbacks see the student rows only: one user batch per chunk, so per-image weights and masks line
        # up with the user's images exactly as without the teacher. With share_cross_attention the students'
        # text output is the teacher's (its text attention map), fused with the students' own style term.
        qs, ks, vs = layout.students(q), layout.students(k), layout.students(v)
        ts = layout.teachers(text) if borrow_text else layout.students(text)
        summed, style, identity = self._terms(active, ts, qs, ks, vs, eo_ip)
        if style is None and identity is None:
            return (layout.borrow_teacher(text) if borrow_text else text).to(q.dtype)
        if style is not None and plan.adain_strength != 0.0:
            student = cross_modal_adain(ts, style, plan.adain_strength)
            if identity is not None:
                student = student + identity
        else:
            student = summed
        if not plan.has_teacher:
            return student.to(q.dtype)
        teacher_text = layout.teachers(text)
        if identity is not None:  # the teacher keeps the identity adapters (same callbacks, its own rows)
            teacher_text, _, _ = self._terms([a for a in active if a[2] == IDENTITY] if active is not None
                                             else None, teacher_text, layout.teachers(q), layout.teachers(k),
                                             layout.teachers(v), eo_ip, identity_only=True)
        return layout.merge(student.to(q.dtype), teacher_text.to(q.dtype))

    def _active(self, extra_options):
        """[(callback, position, role)] of the stacked callbacks that may contribute at this sigma and layer
        (position: 1-based index in the slot, the order the adapters were applied), or None for an IP object
        without IPAdapter_plus's callback protocol."""
        inner = self.inner
        if not has_callback_protocol(inner):
            return None
        sigma = self.plan.sigma_for(extra_options)
        active = []
        for position, (callback, window) in enumerate(zip(inner.callback, inner.kwargs), start=1):
            if not (window["sigma_end"] <= sigma <= window["sigma_start"]):
                continue
            if _known_inactive(callback, window, extra_options):
                continue
            active.append((callback, position, callback_role(callback, window, position, self.plan.roles)))
        return active

    def _terms(self, active, text, q, k, v, extra_options, identity_only=False):
        """(text + the terms as the adapters sum them, style sum or None, identity sum or None) on these rows.
        The integer 0 a callback returns means "not this layer"; an all-zero term is handled by AdaIN itself
        (text kept), without a GPU sync."""
        inner = self.inner
        if active is None:
            return self._generic_terms(text, q, k, v, extra_options, identity_only)
        kwargs = inner.kwargs
        if hasattr(inner, "get_multigpu_kwargs"):  # IPAdapter_plus keeps per-device copies of its tensors
            kwargs = inner.get_multigpu_kwargs(q.device)
        summed, style, identity = text, None, None
        for callback, position, role in active:
            term = callback(summed, q, k, v, extra_options, **kwargs[position - 1])
            if not isinstance(term, torch.Tensor):
                continue
            summed = summed + term
            if role == IDENTITY:
                identity = term if identity is None else identity + term
            else:
                style = term if style is None else style + term
        return summed, style, identity

    def _generic_terms(self, text, q, k, v, extra_options, identity_only):
        # Unknown IP object: only its total output is available, so IP = total − text (one extra attention).
        inner = self.inner
        name = type(inner).__name__
        if name not in IPRoute._warned:
            IPRoute._warned.add(name)
            log.warning("StyleStudio: IP-Adapter patch %s has an unknown layout; using the generic route "
                        "(IP term = patched output − text attention), which costs one extra attention.", name)
        role = callback_role(None, {}, 1, self.plan.roles)
        if identity_only and role != IDENTITY:
            return text, None, None
        total = inner(q, k, v, extra_options)
        term = total - self.attention(q, k, v, extra_options["n_heads"])
        return (total, term, None) if role == STYLE else (total, None, term)

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
    layout = plan.layout(n.shape[0], extra_options["cond_or_uncond"])
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
    layout = plan.layout(n.shape[0], extra_options["cond_or_uncond"])
    return layout.borrow_teacher(n)
