"""The sampling-side mechanism shared by all StyleStudio features (pure torch; the host glue in nodes/ passes
ComfyUI's attention function in).

Settings: each node writes its own entry of `model_options["transformer_options"][SETTINGS_KEY]` on its clone
(plain numbers, so they deep-copy with the model); a second node of the same kind overwrites the entry.

Three hooks, installed once per model under one key:
* `outer_sample`   (per run)  checks the graph, creates the run's `RunState`, doubles the latent batch to
                              `[students | teachers]` with identical noise when the teacher is on (continuing
                              the teacher an earlier sampler of a split schedule handed over), and slices the
                              result (and previews) back.
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
#: transformer_options flag of a style adapter switched off on purpose (StyleStudio Apply Style Adapter at weight 0
#: or with an empty window): AdaIN and Style Guidance then have no style to work with and say nothing.
STYLE_OFF_KEY = "stylestudio_style_off"
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
        self._teacher_conds = {}        # id(cond dict) -> (cond dict, its per-image-doubled copy)
        self._controls = {}             # id(control) -> (control, its per-half wrapper)

    def put_style_negative(self, x: torch.Tensor, prediction: torch.Tensor):
        self._style_negative = (x, prediction)

    def take_style_negative(self, x: torch.Tensor):
        stash, self._style_negative = self._style_negative, None
        return stash[1] if stash is not None and stash[0] is x else None

    def teacher_conds(self, conds: list) -> list:
        """`conds` for a call on [students | teachers] rows: every per-image input (model conds such as the
        prompt or SDXL's pooled vector, masks of mask conds, ControlNet / T2I hints) as ComfyUI gives it to a
        batch of `self.batch`, repeated for the teacher rows. Left to itself ComfyUI fits a batch-n input to all
        2B rows, handing teacher row i another image's input whenever n > 1. Built once per cond entry per run."""
        out = []
        for entries in conds:
            if entries is None:
                out.append(None)
                continue
            doubled = []
            for c in entries:
                hit = self._teacher_conds.get(id(c))
                if hit is None or hit[0] is not c:
                    hit = self._teacher_conds[id(c)] = (c, _per_image_doubled(c, self.batch, self._controls))
                doubled.append(hit[1])
            out.append(doubled)
        return out


def _per_image_doubled(cond: dict, batch: int, controls: dict) -> dict:
    if not isinstance(cond, dict):
        return cond
    c = dict(cond)
    control = cond.get("control")
    if control is not None:  # one wrapper per control object: chunks that share a control still batch together
        if id(control) not in controls:
            controls[id(control)] = (control, _ControlPerHalf(control, batch))
        c["control"] = controls[id(control)][1]
    c["model_conds"] = {k: _DoubledModelCond(v, batch) for k, v in cond.get("model_conds", {}).items()}
    mask = cond.get("mask")
    if isinstance(mask, torch.Tensor) and mask.ndim > 0 and mask.shape[0] > 1:
        # ComfyUI reads mask[:rows] and tiles it: a plain run takes mask[:batch]
        c["mask"] = torch.cat([mask[:batch]] * 2)
    return c


class _DoubledModelCond:
    """A model cond (comfy/conds.py protocol: `process_cond(batch_size, **kw)`) processed for the user batch by
    its own code, then repeated: [students' rows | the same rows for the teachers]."""

    def __init__(self, inner, batch: int):
        self._inner, self._batch = inner, batch

    def __getattr__(self, name):  # everything else is the wrapped object's
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def process_cond(self, batch_size, **kwargs):
        if batch_size != 2 * self._batch:
            return self._inner.process_cond(batch_size=batch_size, **kwargs)
        out = self._inner.process_cond(batch_size=self._batch, **kwargs)
        value = getattr(out, "cond", None)
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == self._batch:
            doubled = torch.cat([value, value])
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == self._batch for v in value):
            doubled = type(value)(torch.cat([v, v]) for v in value)
        else:  # not per image (a constant): as ComfyUI gives it
            return self._inner.process_cond(batch_size=batch_size, **kwargs)
        out = copy.copy(out)
        out.cond = doubled
        return out


class _ControlPerHalf:
    """A ControlNet / T2I-Adapter (comfy/controlnet.py protocol: `get_control(x_noisy, t, cond, batched_number,
    transformer_options)`) evaluated on the student rows and on the teacher rows separately. ComfyUI fits a
    control's hint batch to the rows of the call (tiled per chunk, or row by row when the counts happen to
    match), so on [students | teachers] rows teacher row i could get another image's hint; per half, each half
    gets exactly what a call without the teacher gets."""

    def __init__(self, inner, batch: int):
        self._inner, self._batch = inner, batch

    def __getattr__(self, name):  # everything else is the wrapped object's
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        rows, half = x_noisy.shape[0], batched_number * self._batch
        if rows != 2 * half:
            return self._inner.get_control(x_noisy, t, cond, batched_number, transformer_options)
        chunk = torch.arange(batched_number, device=x_noisy.device).repeat_interleave(self._batch) * 2 * self._batch
        offset = torch.arange(self._batch, device=x_noisy.device).repeat(batched_number)
        students, teachers = chunk + offset, chunk + offset + self._batch

        def part(index):
            sub = {k: v[index] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == rows else v
                   for k, v in cond.items()}
            t_rows = t[index] if isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == rows else t
            return self._inner.get_control(x_noisy[index], t_rows, sub, batched_number, transformer_options)

        return _interleave(part(students), part(teachers), batched_number, self._batch)


def _interleave(students, teachers, chunks: int, batch: int):
    """Control outputs of the two halves back in the call's row order, chunk by chunk [students | teachers]."""
    if students is None or teachers is None:
        return students if teachers is None else teachers
    if isinstance(students, dict):
        return {k: _interleave(v, teachers.get(k), chunks, batch) for k, v in students.items()}
    if isinstance(students, (list, tuple)):
        return type(students)(_interleave(a, b, chunks, batch) for a, b in zip(students, teachers))
    if isinstance(students, torch.Tensor) and students.ndim and students.shape[0] == chunks * batch:
        shape = (chunks, batch) + tuple(students.shape[1:])
        return torch.cat([students.reshape(shape), teachers.reshape(shape)], dim=1).reshape(
            (2 * chunks * batch,) + tuple(students.shape[1:]))
    return students  # not per row (broadcast over the call): both halves got the same


# ---------------------------------------------------------------------------------------------------- per run
def outer_sample(executor, noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                 *, student_noise_sampler: Callable | None = None):
    """`student_noise_sampler(sampler)` returns None when `sampler` draws no per-step noise (or is unknown), else
    `build(template, sigmas, seed)`: the per-step noise sampler it would build for `template`'s rows."""
    guider = executor.class_obj
    to = guider.model_options.setdefault("transformer_options", {})  # this run's own copy
    settings = settings_of(to)
    handover = _handover_for(latent_image)
    if not settings and (handover is None or not handover.in_latent):
        return executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)

    ip_keys = ip_patch_keys(to)
    _warn_unmatched_roles(settings.get(ROLES_SETTING), to, ip_keys)
    for feature in ("adain", "guidance"):
        if feature in settings and not ip_keys and not to.get(STYLE_OFF_KEY):
            raise StyleStudioError(
                f"{NODE_NAMES[feature]}: the model that reaches the sampler has no IP-Adapter, so there is no "
                "style to work with. Add a style adapter on the MODEL path before the sampler ('StyleStudio Apply "
                "Style Adapter', or an IPAdapter node such as 'IPAdapter Advanced' from ComfyUI_IPAdapter_plus), "
                "or bypass this node.")
    teacher = settings.get("teacher")
    batch = noise.shape[0]
    teacher_rows = None
    if handover is not None and handover.in_latent:
        # An earlier sampler returned [students | teachers] (return_teacher): its teacher rows stay the teacher.
        batch = handover.batch
        latent_image, teacher_rows = latent_image[:batch], latent_image[batch:]
        noise = noise[:batch]  # a teacher shares the students' noise
        if teacher is None:  # no Teacher Layout here: carry it on without coupling
            teacher = {"sigma_start": -1.0, "sigma_end": -1.0, "share_cross_attention": False, "return_teacher": True}
            to[SETTINGS_KEY] = {**settings, "teacher": teacher}
    elif handover is not None and teacher is not None:
        teacher_rows = handover.teachers  # None when the earlier sampler's teacher ended with its window

    if teacher is not None:
        if guider.model_options.get("context_handler") is not None:
            raise StyleStudioError(
                f"{NODE_NAMES['teacher']}: context windows (e.g. ComfyUI's 'Context Windows (Manual)' node) split "
                "the latent batch, and the teacher needs every model call to hold [your images | teachers]. "
                "Remove the context-windows node from this model or bypass Teacher Layout.")
        if not ip_keys:
            log.warning("%s: the model has no IP-Adapter, so the teacher equals the student; it only costs time.",
                        NODE_NAMES["teacher"])
        if teacher_rows is None:
            # The window on the schedule of the model that samples (as calc_cond_batch resolves it per run).
            window = resolve_window(teacher, _model_sampling_of(guider))
            teacher = _teacher_for_this_schedule(teacher, window, sigmas, noise, handed_over=handover is not None)

    to[RUN_KEY] = RunState(batch, getattr(guider, "cfg", None), teacher is not None)
    if teacher is None:
        return executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)

    # The teacher: the same graph from the *same* noise, as extra latent rows, so chunks become
    # [students | teachers]. Per-image inputs are given to the teacher rows as to their students: conds, masks
    # and control hints per model call (RunState.teacher_conds), noise masks below.
    students = repeat_to_batch(latent_image, batch)
    teachers = students if teacher_rows is None else teacher_rows.to(device=students.device, dtype=students.dtype)
    noise = torch.cat([noise, noise])
    latent_image = torch.cat([students, teachers])
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
    returned = out if teacher["return_teacher"] else out[:batch]
    _hand_over(returned, batch, None if to[RUN_KEY].teacher_dropped else out[batch:], teacher["return_teacher"])
    return returned


def _model_sampling_of(guider):
    """The model sampling the guider's model samples with (ModelSampling nodes included), None if it has none."""
    patcher = getattr(guider, "model_patcher", None)
    return patcher.get_model_object("model_sampling") if patcher is not None else None


def teacher_window_missed(sigmas: torch.Tensor, window: dict) -> bool:
    """True when this run's schedule starts below the window (img2img at a low denoise, or a later pass of a split
    schedule): the teacher would never couple in it."""
    return window["sigma_start"] >= 0 and sigmas is not None and len(sigmas) > 1 and \
        float(sigmas[0]) < window["sigma_end"]


def _teacher_for_this_schedule(teacher: dict, window: dict, sigmas, noise, *, handed_over: bool):
    """The teacher settings this run uses when no teacher rows were handed over (None: skip the teacher).
    `window`: the teacher's window as sigmas of this run's model sampling."""
    missed = teacher_window_missed(sigmas, window)
    name = NODE_NAMES["teacher"]
    if handed_over:  # an earlier StyleStudio sampler's teacher ended with its window
        if teacher["return_teacher"] or not missed:
            log.warning("%s: the sampler before this one dropped its teacher when its window ended, so this "
                        "sampler's teacher starts from your image's latent, not from the true teacher. Turn "
                        "return_teacher on in the earlier sampler's Teacher Layout (its teacher then runs to the end "
                        "and is carried over), or give both the same window.",
                        name)
    elif missed:
        log.warning("%s: this run starts at sigma %.4g, after the teacher's window (end_at = sigma %.4g), e.g. an "
                    "img2img denoise below 1 - end_at or a second sampler of a split schedule, so the teacher never "
                    "lends its layout%s. Raise end_at above 1 - denoise (denoise 0.5 -> end_at 0.6 or more), or "
                    "bypass the node.", name, float(sigmas[0]), window["sigma_end"],
                    "" if teacher["return_teacher"] else ": it is skipped and you get the plain stylised result")
    elif not torch.any(noise):  # add_noise off: this sampler continues an earlier sampler's latent
        log.warning("%s: this sampler adds no noise, so it continues an earlier sampler's latent, and that sampler "
                    "handed over no teacher: the teacher starts from the latent it got. If the earlier sampler is "
                    "stylised, put a Teacher Layout node with the same window on its model too, and connect its "
                    "LATENT output straight to this sampler.", name)
    return None if missed and not teacher["return_teacher"] else teacher


class _Handover:
    """The teacher of a finished run, for the next sampler that continues its latent."""

    def __init__(self, returned: torch.Tensor, batch: int, teachers, in_latent: bool):
        self.returned = returned    # exactly what the run returned: students, or [students | teachers]
        self.batch = batch
        self.teachers = teachers    # the teacher rows at the end of the run; None once dropped after the window
        self.in_latent = in_latent


# KSamplerAdvanced 0..k then k..N (or SDXL base -> refiner) passes a LATENT dict from one sampler to the next;
# ComfyUI copies the dict but moves the samples to its intermediate device (a new tensor on a GPU), so neither
# a dict key nor a tensor attribute reaches the next sampler. The mark is the content: a later StyleStudio
# sampler whose input latent equals what a teacher run returned continues that run's teacher (bit-exact compare,
# once per run). The last few runs are kept (a few latents).
_HANDOVERS: list = []
_HANDOVER_KEEP = 4


def _hand_over(returned: torch.Tensor, batch: int, teachers, in_latent: bool):
    # a copy: the returned tensor goes on to other nodes (and is the same object when sampling on the CPU)
    _HANDOVERS.append(_Handover(returned.detach().clone(), batch, None if teachers is None else teachers.detach(),
                                in_latent))
    del _HANDOVERS[:-_HANDOVER_KEEP]


def _handover_for(latent_image: torch.Tensor):
    for h in reversed(_HANDOVERS):
        if h.returned.shape == latent_image.shape and h.returned.dtype == latent_image.dtype and \
                torch.equal(h.returned.to(latent_image.device), latent_image):
            return h
    return None


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

    teacher = settings.get("teacher") if state.teacher else None
    if teacher is not None and x_in.shape[0] != 2 * state.batch:
        raise StyleStudioError(
            f"{NODE_NAMES['teacher']}: a model call got {x_in.shape[0]} latent rows, but the teacher doubled your "
            f"batch of {state.batch} to {2 * state.batch} ([your images | teachers]). Another node splits or "
            "re-batches the latent (e.g. context windows or a custom guider): remove it or bypass Teacher Layout.")
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
    if has_teacher:
        conds = state.teacher_conds(conds)
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
