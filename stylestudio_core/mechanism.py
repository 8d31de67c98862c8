"""The sampling-side mechanism shared by all StyleStudio features (pure torch; the host glue in nodes/ passes
ComfyUI's attention function in).

Settings: each node writes its own entry of `model_options["transformer_options"][SETTINGS_KEY]` on its clone
(plain numbers, so they deep-copy with the model); a second node of the same kind overwrites the entry.

Three hooks, installed once per model under one key:
* `outer_sample`   (per run)  checks the graph, creates the run's `RunState`, doubles the latent batch to
                              `[students | teachers]` with identical noise when the teacher is on, and slices
                              the result (and previews) back.
* `calc_cond_batch` (per model evaluation) decides what this sigma needs (teacher rows or not, coupling,
                              AdaIN, the extra style branch), builds the call's `CallPlan`, and routes attention
                              through a per-call copy of transformer_options (routing.py).
* `post_cfg`       (per step)  applies the split text/style guidance scales.
"""
from __future__ import annotations

import copy
import logging
from typing import Callable

import torch

from .guidance import split_scale_correction
from .routing import (PLAN_KEY, ROLES_SETTING, CallPlan, IPRoute, has_callback_protocol, ip_patch_keys,
                      is_ip_patch, teacher_attn1_patch, teacher_attn2_output_patch)

log = logging.getLogger("StyleStudio")

SETTINGS_KEY = "stylestudio"
RUN_KEY = "stylestudio_run"
WRAPPER_KEY = "stylestudio"

NODE_NAMES = {
    "adain": "StyleStudio Cross-Modal AdaIN",
    "teacher": "StyleStudio Teacher Layout",
    "guidance": "StyleStudio Style Guidance",
    ROLES_SETTING: "StyleStudio Adapter Roles",  # which stacked adapters are style and which identity
}


class StyleStudioError(ValueError):
    """A user-facing error: says which node and what to do."""


def in_window(sigma: float, window: dict) -> bool:
    # ComfyUI's start/end-percent convention turned into sigmas: sigma_start >= sigma >= sigma_end.
    return window["sigma_end"] <= sigma <= window["sigma_start"]


def resolve_window(feature: dict, model_sampling) -> dict:
    """A feature's window as sigmas of the model sampling that actually samples. The nodes store fractions of the
    schedule (`start_at`/`end_at`, ComfyUI's start/end-percent convention), so a ModelSampling node placed before
    or after a StyleStudio node moves the window with the schedule; an empty window (end_at <= start_at) matches
    no sigma. Explicit `sigma_start`/`sigma_end` are taken as they are."""
    if "sigma_start" in feature:
        return {"sigma_start": float(feature["sigma_start"]), "sigma_end": float(feature["sigma_end"])}
    start, end = float(feature["start_at"]), float(feature["end_at"])
    if end <= start:
        return {"sigma_start": -1.0, "sigma_end": -1.0}
    return {"sigma_start": float(model_sampling.percent_to_sigma(start)),
            "sigma_end": float(model_sampling.percent_to_sigma(end))}


def run_windows(state, settings: dict, model) -> dict:
    """{feature: resolved window} for this run, computed at its first model call (against `model`, the model
    being sampled, whose model_sampling includes any ModelSampling node) and kept on the run state."""
    windows = getattr(state, "windows", None)
    if windows is None:
        sampling = getattr(model, "model_sampling", None)
        windows = {}
        for feature in ("teacher", "adain", "guidance"):
            if feature in settings:
                if sampling is None and "sigma_start" not in settings[feature]:
                    raise StyleStudioError(f"{NODE_NAMES[feature]}: the sampled model has no model_sampling, so "
                                           "start_at/end_at cannot be placed on its schedule.")
                windows[feature] = resolve_window(settings[feature], sampling)
        state.windows = windows
    return windows


def settings_of(transformer_options: dict) -> dict:
    return transformer_options.get(SETTINGS_KEY) or {}


def repeat_to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    if t.shape[0] == batch:
        return t
    reps = -(-batch // t.shape[0])
    return t.repeat((reps,) + (1,) * (t.ndim - 1))[:batch]


class RunState:
    """Lives in the run's own copy of model_options for one sampling run, then is gone."""

    def __init__(self, batch: int, cfg: float | None, teacher: bool):
        self.batch = batch              # the user's latent batch
        self.cfg = cfg                  # the sampler's guidance scale, when the guider has one
        self.teacher = teacher          # latent rows are [students | teachers]
        self.teacher_dropped = False    # once the teacher stops being computed it never comes back
        self._style_negative = None     # (x identity, prediction of the extra branch)
        self.windows = None             # {feature: sigma window}, resolved at the run's first model call
        self.row_layouts = {}           # RowLayouts of this run's calls, by (rows, cond_or_uncond, teacher)

    def put_style_negative(self, x: torch.Tensor, prediction: torch.Tensor):
        self._style_negative = (x, prediction)

    def take_style_negative(self, x: torch.Tensor):
        stash, self._style_negative = self._style_negative, None
        return stash[1] if stash is not None and stash[0] is x else None


# ---------------------------------------------------------------------------------------------------- per run
def outer_sample(executor, noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                 *, student_noise_sampler: Callable | None = None):
    """`student_noise_sampler(sampler)` returns None when `sampler` draws no per-step noise (or is unknown), else
    `build(template, sigmas, seed)`: the per-step noise sampler it would build for `template`'s rows."""
    guider = executor.class_obj
    to = guider.model_options.setdefault("transformer_options", {})  # this run's own copy
    settings = settings_of(to)
    if not settings:
        return executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)

    ip_keys = ip_patch_keys(to)
    _warn_unmatched_roles(settings.get(ROLES_SETTING), to, ip_keys)
    for feature in ("adain", "guidance"):
        if feature in settings and not ip_keys:
            raise StyleStudioError(
                f"{NODE_NAMES[feature]}: the model that reaches the sampler has no IP-Adapter, so there is no "
                "style to work with. Add an IPAdapter node (e.g. 'IPAdapter Advanced' or 'IPAdapter Style & "
                "Composition SDXL' from ComfyUI_IPAdapter_plus) on the MODEL path before the sampler, or bypass "
                "this node.")
    teacher = settings.get("teacher")
    if teacher is not None and not ip_keys:
        log.warning("%s: the model has no IP-Adapter, so the teacher equals the student; it only costs time.",
                    NODE_NAMES["teacher"])

    batch = noise.shape[0]
    to[RUN_KEY] = RunState(batch, getattr(guider, "cfg", None), teacher is not None)
    if teacher is None:
        return executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)

    # The teacher: the same graph from the *same* noise, as extra latent rows. Conds, masks and ControlNet
    # hints are tiled to the latent batch by ComfyUI, so chunks become [students | teachers].
    noise = torch.cat([noise, noise])
    latent_image = torch.cat([repeat_to_batch(latent_image, batch)] * 2)
    if denoise_mask is not None:
        # Raw noise masks come as (H, W), (N, H, W) or (N, 1, H, W); ComfyUI reads any of them as (-1, 1, H, W).
        denoise_mask = denoise_mask.reshape((-1, 1) + tuple(denoise_mask.shape[-2:]))
        if denoise_mask.shape[0] > 1:
            denoise_mask = torch.cat([repeat_to_batch(denoise_mask, batch)] * 2)
    sampler = _with_tied_noise(sampler, noise, batch, sigmas, seed, student_noise_sampler)
    user_callback = callback
    if user_callback is not None and not teacher["return_teacher"]:
        def callback(step, x0, x, total_steps):  # previews (and SamplerCustom's denoised output) show the students
            return user_callback(step, x0[:batch], x[:batch], total_steps)
    out = executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
    return out if teacher["return_teacher"] else out[:batch]


def _warn_unmatched_roles(roles: dict | None, transformer_options: dict, ip_keys: list):
    """A role chosen for adapter N when no layer stacks N adapters does nothing: say so, once per run."""
    positions = (roles or {}).get("by_position") or {}
    if not positions:
        return
    slots = transformer_options.get("patches_replace", {}).get("attn2", {})
    stacked = max((len(slots[k].callback) if has_callback_protocol(slots[k]) else 1 for k in ip_keys), default=0)
    beyond = sorted(p for p in positions if p > stacked)
    if beyond:
        log.warning("%s: roles name adapter %s, but the model that reaches the sampler carries %d IP-Adapter(s); "
                    "that choice does nothing. Number the adapters in the order they are applied along the MODEL "
                    "path (1 = first).", NODE_NAMES[ROLES_SETTING], ", ".join(map(str, beyond)), stacked)


def _with_tied_noise(sampler, noise, batch, sigmas, seed, student_noise_sampler):
    """Ancestral/SDE samplers draw fresh noise every step. Give the teacher exactly the students' draws, and the
    students the draws they would get without a teacher, so the coupling stays exact with any sampler."""
    options = getattr(sampler, "extra_options", None)
    if student_noise_sampler is None or not isinstance(options, dict) or options.get("noise_sampler") is not None:
        return sampler
    build = student_noise_sampler(sampler)
    if build is None:
        return sampler
    inner = None

    def tied(sigma, sigma_next):
        nonlocal inner
        if inner is None:  # built at the first draw, on the device and dtype sampling runs on
            template = torch.zeros((batch,) + tuple(noise.shape[1:]), dtype=noise.dtype, device=sigma.device)
            inner = build(template, sigmas.to(sigma.device), seed)
        z = inner(sigma, sigma_next)
        return torch.cat([z, z])

    tied_sampler = copy.copy(sampler)
    tied_sampler.extra_options = {**options, "noise_sampler": tied}
    return tied_sampler


# ------------------------------------------------------------------------------------------- per model call
def calc_cond_batch(executor, model, conds, x_in, timestep, model_options, *, attention: Callable):
    to = model_options.get("transformer_options", {})
    settings, state = settings_of(to), to.get(RUN_KEY)
    if not settings or state is None:
        return executor(model, conds, x_in, timestep, model_options)
    sigma = float(timestep.flatten()[0])  # the call's one host read; every layer takes it from the plan
    windows = run_windows(state, settings, model)

    teacher = settings.get("teacher") if state.teacher and x_in.shape[0] == 2 * state.batch else None
    drop = False
    if teacher is not None and not teacher["return_teacher"]:
        # After the window nothing flows from teacher to student: stop computing the teacher.
        state.teacher_dropped = state.teacher_dropped or sigma < windows["teacher"]["sigma_end"]
        drop = state.teacher_dropped
    couple = teacher is not None and not state.teacher_dropped and in_window(sigma, windows["teacher"])

    adain = settings.get("adain")
    adain_strength = adain["strength"] if adain is not None and in_window(sigma, windows["adain"]) else 0.0

    guidance = settings.get("guidance")
    extra_branch = (guidance is not None and in_window(sigma, windows["guidance"])
                    and guidance["style_cfg"] != state.cfg and len(conds) == 2 and conds[0] is not None)

    has_teacher = teacher is not None and not drop
    if not (has_teacher or adain_strength or extra_branch):
        if drop:
            return _with_frozen_teacher(executor(model, conds, x_in[:state.batch], _rows(timestep, state.batch),
                                                 model_options), x_in, state.batch)
        return executor(model, conds, x_in, timestep, model_options)

    ip_keys = ip_patch_keys(to)
    plan = CallPlan(has_teacher=has_teacher, couple=couple, share_cross=bool(teacher and teacher["share_cross_attention"]),
                    adain_strength=float(adain_strength), token_branch={len(conds): 1} if extra_branch else None,
                    ip_keys=ip_keys, attn1_replace_keys=to.get("patches_replace", {}).get("attn1", {}).keys(),
                    sigma=sigma, roles=settings.get(ROLES_SETTING), layouts=getattr(state, "row_layouts", None))
    options = _routed_options(model_options, plan, attention)
    if extra_branch:
        # ε(t, s⁻): the prompt with the adapter's uncond/negative style tokens, batched with the others.
        conds = list(conds) + [conds[0]]
    if drop:
        out = executor(model, conds, x_in[:state.batch], _rows(timestep, state.batch), options)
        out = _with_frozen_teacher(out, x_in, state.batch)
    else:
        out = executor(model, conds, x_in, timestep, options)
    if extra_branch:
        state.put_style_negative(x_in, out[-1])
        out = out[:-1]
    return out


def _rows(timestep: torch.Tensor, batch: int) -> torch.Tensor:
    return timestep[:batch] if timestep.ndim and timestep.shape[0] > batch else timestep


def _with_frozen_teacher(out: list, x_in: torch.Tensor, batch: int) -> list:
    # The dropped teacher's prediction is its own input (denoised = x): its rows stay finite and are never
    # read again; the student's rows are untouched.
    return [torch.cat([o, x_in[batch:]]) for o in out]


def _routed_options(model_options: dict, plan: CallPlan, attention: Callable) -> dict:
    """A per-call copy of model_options with the routes and teacher patches in place (inputs untouched)."""
    to = dict(model_options.get("transformer_options", {}))
    to[PLAN_KEY] = plan
    replace = dict(to.get("patches_replace", {}))
    attn2 = dict(replace.get("attn2", {}))
    for key, patch in attn2.items():
        if is_ip_patch(patch) and not isinstance(patch, IPRoute):
            attn2[key] = IPRoute(patch, plan, attention)
    replace["attn2"] = attn2
    to["patches_replace"] = replace
    if plan.couple:
        patches = dict(to.get("patches", {}))
        patches["attn1_patch"] = list(patches.get("attn1_patch", [])) + [teacher_attn1_patch]
        if plan.share_cross:
            patches["attn2_output_patch"] = list(patches.get("attn2_output_patch", [])) + [teacher_attn2_output_patch]
        to["patches"] = patches
    return {**model_options, "transformer_options": to}


# ------------------------------------------------------------------------------------------------ per step
def post_cfg(args: dict) -> torch.Tensor:
    to = args["model_options"].get("transformer_options", {})
    state, guidance = to.get(RUN_KEY), settings_of(to).get("guidance")
    denoised = args["denoised"]
    if state is None or guidance is None:
        return denoised
    style_negative = state.take_style_negative(args["input"])
    if style_negative is None:
        return denoised
    return split_scale_correction(denoised, args["cond_denoised"], style_negative, args["cond_scale"],
                                  guidance["style_cfg"])


post_cfg.stylestudio = True
