"""Stand-in of comfy/samplers.py: cond batching, CFG, the guider, schedulers and the KSampler helper.

Real semantics kept (host.md sections 2-4):
* ``calc_cond_batch`` runs the CALC_COND_BATCH wrappers, then ``_calc_cond_batch``: one chunk per conditioning
  entry per cond index (each chunk = the whole latent batch, or its ``area`` crop); concatenable chunks are
  taken in REVERSE order ([positive, negative] -> cond_or_uncond [1, 0]) and batched as long as
  ``model.memory_required(shape) * 1.5 < comfy.model_management.get_free_memory()`` -- halving the group until it
  fits, one chunk per forward when nothing fits (patch get_free_memory to 0 to force that). Each forward gets
  a fresh nested copy of model_options["transformer_options"] (merge_nested_dicts) plus "cond_or_uncond",
  "uuids" and "sigmas" (the sampler sigma per LATENT row, not per model row); outputs are accumulated with their mult (mask * strength, feathered area) and divided
  by the summed mults.
* ``sampling_function``: cfg == 1 skips the negative (conds = [cond, None]) unless
  model_options["disable_cfg1_optimization"]; sampler_calc_cond_batch_function, pre-cfg functions, then
  ``cfg_function`` (sampler_cfg_function gets noise-space cond/uncond; post-cfg functions get the real args).
* ``CFGGuider.sample`` -> nested clone of model_options, patcher wrappers/callbacks merged in
  (sampler_helpers.prepare_model_patcher), OUTER_SAMPLE wrappers (class_obj = guider) -> ``outer_sample``: load
  the model (the .to() slot replacement on the PATCHER's model_options, i.e. after this run's copy was taken),
  denoise mask to latent shape and batch, pre_run -> ``inner_sample``: process conds, another nested clone with
  "sample_sigmas", SAMPLER_SAMPLE wrappers -> KSAMPLER.sample (KSamplerX0Inpaint semantics) -> cleanup.
* ``KSampler``: schedulers "normal", "karras", "simple", "sgm_uniform", "exponential"; denoise < 1 takes the
  last steps+1 sigmas of a schedule of int(steps / denoise) steps; samplers "euler", "euler_ancestral", "heun",
  "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu".
Conds: "area" (latent units, or ("percentage", ...)), "mask" (+ "mask_strength"), "strength",
"start_percent"/"end_percent" and the same-area partner conds behave as real.
Simplified: no hooks / HookGroups, ControlNet, GLIGEN, context windows, "default" conds, "set_area_to_bounds";
the real sampler/scheduler NAME lists are kept (dropdowns, fallback to the first name) but only the ones above
run -- the others raise NotImplementedError.
"""
from __future__ import annotations

import collections
import math

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.utils
from comfy.k_diffusion import sampling as k_diffusion_sampling
from comfy.patcher_extension import WrapperExecutor, WrappersMP, get_all_wrappers

# --------------------------------------------------------------------------------------------------------------
# one chunk per conditioning entry
# --------------------------------------------------------------------------------------------------------------
CondObj = collections.namedtuple("cond_obj", ["input_x", "mult", "conditioning", "area", "control", "patches", "uuid", "hooks"])


def get_area_and_mult(conds, x_in, timestep_in):
    """The chunk one conditioning entry contributes at this timestep, or None when outside its window."""
    if "timestep_start" in conds and timestep_in[0] > conds["timestep_start"]:
        return None
    if "timestep_end" in conds and timestep_in[0] < conds["timestep_end"]:
        return None
    dims = x_in.ndim - 2
    area = None
    if "area" in conds:
        area = list(conds["area"])  # (sizes..., offsets...) in latent units
        if len(area) // 2 != dims:
            raise NotImplementedError("stand-in: area must have one size and one offset per latent dim")
    strength = conds.get("strength", 1.0)

    input_x = x_in
    if area is not None:
        for i in range(dims):
            area[i] = min(x_in.shape[i + 2] - area[dims + i], area[i])
            input_x = input_x.narrow(i + 2, area[dims + i], area[i])

    if "mask" in conds:
        mask = conds["mask"][: input_x.shape[0]] * conds.get("mask_strength", 1.0)
        if area is not None:
            for i in range(dims):
                mask = mask.narrow(i + 1, area[dims + i], area[i])
        mask = mask.unsqueeze(1).repeat((input_x.shape[0] // mask.shape[0], input_x.shape[1]) + (1,) * (mask.ndim - 1))
    else:
        mask = torch.ones_like(input_x)
    mult = mask * strength

    if "mask" not in conds and area is not None:
        # feather the inner edges of an area over up to 8 latent pixels (real "fuzz")
        for i in range(dims):
            rr = min(8, mult.shape[2 + i] // 4)
            for t in range(rr):
                f = (t + 1) / rr
                if area[dims + i] != 0:
                    mult.narrow(i + 2, t, 1).mul_(f)
                if area[i] + area[dims + i] < x_in.shape[i + 2]:
                    mult.narrow(i + 2, area[i] - 1 - t, 1).mul_(f)

    conditioning = {k: mc.process_cond(batch_size=x_in.shape[0], area=area) for k, mc in conds["model_conds"].items()}
    return CondObj(input_x, mult, conditioning, area, conds.get("control"), None, conds["uuid"], conds.get("hooks"))


def _conds_concatable(c1: dict, c2: dict):
    if c1 is c2:
        return True
    return c1.keys() == c2.keys() and all(c1[k].can_concat(c2[k]) for k in c1)


def can_concat_cond(c1, c2):
    if c1.input_x.shape != c2.input_x.shape:
        return False
    for a, b in ((c1.control, c2.control), (c1.patches, c2.patches)):
        if (a is None) != (b is None) or (a is not None and a is not b):
            return False
    return _conds_concatable(c1.conditioning, c2.conditioning)


def cond_cat(c_list):
    keys = {}
    for c in c_list:
        for k, v in c.items():
            keys.setdefault(k, []).append(v)
    return {k: v[0].concat(v[1:]) for k, v in keys.items()}


def calc_cond_batch(model, conds, x_in, timestep, model_options):
    return _calc_cond_batch_outer(model, conds, x_in, timestep, model_options)


def _calc_cond_batch_outer(model, conds, x_in, timestep, model_options):
    executor = WrapperExecutor.new_executor(
        _calc_cond_batch, get_all_wrappers(WrappersMP.CALC_COND_BATCH, model_options, is_model_options=True))
    return executor.execute(model, conds, x_in, timestep, model_options)


def _calc_cond_batch(model, conds, x_in, timestep, model_options):
    out_conds, out_counts = [], []
    to_run = []  # (chunk, cond index) in cond order, then entry order
    for i, cond in enumerate(conds):
        out_conds.append(torch.zeros_like(x_in))
        out_counts.append(torch.ones_like(x_in) * 1e-37)
        for c in cond or []:
            if "default" in c:
                raise NotImplementedError("stand-in: 'default' conds are not supported")
            p = get_area_and_mult(c, x_in, timestep)
            if p is not None:
                to_run.append((p, i))

    model.current_patcher.prepare_state(timestep)

    while to_run:
        first = to_run[0][0]
        group = [j for j in range(len(to_run)) if can_concat_cond(to_run[j][0], first)]
        group.reverse()  # the LAST entry of the group goes first: [positive, negative] -> [1, 0]
        to_batch = group[:1]
        free_memory = comfy.model_management.get_free_memory(x_in.device)
        for div in range(1, len(group) + 1):
            candidate = group[: len(group) // div]
            shape = [len(candidate) * first.input_x.shape[0]] + list(first.input_x.shape[1:])
            if model.memory_required(shape) * 1.5 < free_memory:
                to_batch = candidate
                break

        picked = [to_run.pop(j) for j in to_batch]  # indices descend, so popping in this order is safe
        chunks = [p for p, _ in picked]
        cond_or_uncond = [i for _, i in picked]
        n = len(chunks)
        input_x = torch.cat([p.input_x for p in chunks])
        c = cond_cat([p.conditioning for p in chunks])
        timestep_ = torch.cat([timestep] * n)

        transformer_options = model.current_patcher.apply_hooks(hooks=None)
        if "transformer_options" in model_options:
            transformer_options = comfy.patcher_extension.merge_nested_dicts(
                transformer_options, model_options["transformer_options"], copy_dict1=False)
        transformer_options["cond_or_uncond"] = cond_or_uncond[:]
        transformer_options["uuids"] = [p.uuid for p in chunks]
        transformer_options["sigmas"] = timestep
        c["transformer_options"] = transformer_options

        if "model_function_wrapper" in model_options:
            output = model_options["model_function_wrapper"](
                model.apply_model, {"input": input_x, "timestep": timestep_, "c": c, "cond_or_uncond": cond_or_uncond})
        else:
            output = model.apply_model(input_x, timestep_, **c)
        output = output.chunk(n)

        for o, p in enumerate(chunks):
            tgt, cnt = out_conds[cond_or_uncond[o]], out_counts[cond_or_uncond[o]]
            if p.area is not None:
                d = len(p.area) // 2
                for i in range(d):
                    tgt = tgt.narrow(i + 2, p.area[i + d], p.area[i])
                    cnt = cnt.narrow(i + 2, p.area[i + d], p.area[i])
            tgt += output[o] * p.mult
            cnt += p.mult

    return [oc / cnt for oc, cnt in zip(out_conds, out_counts)]


# --------------------------------------------------------------------------------------------------------------
# guidance
# --------------------------------------------------------------------------------------------------------------
def cfg_function(model, cond_pred, uncond_pred, cond_scale, x, timestep, model_options={}, cond=None, uncond=None):
    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": timestep,
                "input": x, "sigma": timestep, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                "model": model, "model_options": model_options, "input_cond": cond, "input_uncond": uncond}
        result = x - model_options["sampler_cfg_function"](args)
    else:
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale

    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": result, "cond": cond, "uncond": uncond, "cond_scale": cond_scale, "model": model,
                "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": timestep,
                "model_options": model_options, "input": x}
        result = fn(args)
    return result


def sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None):
    skip_uncond = math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False)
    uncond_ = None if skip_uncond else uncond
    conds = [cond, uncond_]
    if "sampler_calc_cond_batch_function" in model_options:
        args = {"conds": conds, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        out = model_options["sampler_calc_cond_batch_function"](args)
    else:
        out = calc_cond_batch(model, conds, x, timestep, model_options)
    for fn in model_options.get("sampler_pre_cfg_function", []):
        args = {"conds": conds, "conds_out": out, "cond_scale": cond_scale, "timestep": timestep, "input": x,
                "sigma": timestep, "model": model, "model_options": model_options}
        out = fn(args)
    return cfg_function(model, out[0], out[1], cond_scale, x, timestep, model_options=model_options, cond=cond,
                        uncond=uncond_)


class KSamplerX0Inpaint:
    """Wraps the guider: with a denoise_mask, the kept region is re-noised latent_image on the way in and the
    clean latent_image on the way out."""

    def __init__(self, model, sigmas):
        self.inner_model = model
        self.sigmas = sigmas

    def __call__(self, x, sigma, denoise_mask, model_options={}, seed=None):
        if denoise_mask is not None:
            if "denoise_mask_function" in model_options:
                denoise_mask = model_options["denoise_mask_function"](
                    sigma, denoise_mask, extra_options={"model": self.inner_model, "sigmas": self.sigmas})
            keep = 1.0 - denoise_mask
            renoised = self.inner_model.inner_model.scale_latent_inpaint(x=x, sigma=sigma, noise=self.noise,
                                                                         latent_image=self.latent_image)
            x = x * denoise_mask + renoised * keep
        out = self.inner_model(x, sigma, model_options=model_options, seed=seed)
        if denoise_mask is not None:
            out = out * denoise_mask + self.latent_image * keep
        return out


# --------------------------------------------------------------------------------------------------------------
# schedulers
# --------------------------------------------------------------------------------------------------------------
def simple_scheduler(model_sampling, steps):
    s = model_sampling.sigmas
    stride = len(s) / steps
    return torch.FloatTensor([float(s[-(1 + int(i * stride))]) for i in range(steps)] + [0.0])


def normal_scheduler(model_sampling, steps, sgm=False, floor=False):
    s = model_sampling
    start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
    append_zero = True
    if sgm:
        ts = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        ts = torch.linspace(start, end, steps)
    sigs = [float(s.sigma(t)) for t in ts]
    return torch.FloatTensor(sigs + ([0.0] if append_zero else []))


def exponential_scheduler(n, sigma_min, sigma_max, device="cpu"):
    sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp()
    return k_diffusion_sampling.append_zero(sigmas)


SCHEDULER_HANDLERS = {
    "simple": (simple_scheduler, True),
    "sgm_uniform": (lambda ms, steps: normal_scheduler(ms, steps, sgm=True), True),
    "karras": (k_diffusion_sampling.get_sigmas_karras, False),
    "exponential": (exponential_scheduler, False),
    "normal": (normal_scheduler, True),
}
# the real list, in the real order (dropdowns and KSampler's fallback to the first name use it)
SCHEDULER_NAMES = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                   "linear_quadratic", "kl_optimal"]


def calculate_sigmas(model_sampling, scheduler_name: str, steps: int) -> torch.Tensor:
    if scheduler_name not in SCHEDULER_NAMES:
        raise ValueError(f"error invalid scheduler {scheduler_name}")
    if scheduler_name not in SCHEDULER_HANDLERS:
        raise NotImplementedError(f"stand-in: scheduler {scheduler_name!r} is not implemented "
                                  f"(have {list(SCHEDULER_HANDLERS)})")
    fn, use_ms = SCHEDULER_HANDLERS[scheduler_name]
    if use_ms:
        return fn(model_sampling, steps)
    return fn(n=steps, sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max))


# --------------------------------------------------------------------------------------------------------------
# samplers
# --------------------------------------------------------------------------------------------------------------
# the real lists (dropdowns, KSampler's fallback); only IMPLEMENTED_SAMPLERS can run here
KSAMPLER_NAMES = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
                  "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
                  "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
                  "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde",
                  "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
                  "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
                  "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
                  "sa_solver_pece"]
SAMPLER_NAMES = KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"]
IMPLEMENTED_SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu"]


class Sampler:
    def sample(self):
        pass

    def max_denoise(self, model_wrap, sigmas):
        max_sigma = float(model_wrap.inner_model.model_sampling.sigma_max)
        sigma = float(sigmas[0])
        return math.isclose(max_sigma, sigma, rel_tol=1e-05) or sigma > max_sigma


class KSAMPLER(Sampler):
    def __init__(self, sampler_function, extra_options={}, inpaint_options={}):
        self.sampler_function = sampler_function
        self.extra_options = extra_options
        self.inpaint_options = inpaint_options

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        extra_args["denoise_mask"] = denoise_mask
        model_k = KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        model_k.noise = noise
        ms = model_wrap.inner_model.model_sampling
        noise = ms.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        total_steps = len(sigmas) - 1
        k_callback = None
        if callback is not None:
            k_callback = lambda d: callback(d["i"], d["denoised"], d["x"], total_steps)
        samples = self.sampler_function(model_k, noise, sigmas, extra_args=extra_args, callback=k_callback,
                                        disable=disable_pbar, **self.extra_options)
        return ms.inverse_noise_scaling(sigmas[-1], samples)


def ksampler(sampler_name, extra_options={}, inpaint_options={}):
    return KSAMPLER(getattr(k_diffusion_sampling, "sample_{}".format(sampler_name)), extra_options, inpaint_options)


def sampler_object(name):
    if name not in IMPLEMENTED_SAMPLERS:
        raise NotImplementedError(f"stand-in: sampler {name!r} is not implemented (have {IMPLEMENTED_SAMPLERS})")
    return ksampler(name)


# --------------------------------------------------------------------------------------------------------------
# conds preparation
# --------------------------------------------------------------------------------------------------------------
def resolve_areas_and_cond_masks_multidim(conditions, dims, device):
    for i, c in enumerate(conditions):
        if "area" in c and c["area"][0] == "percentage":
            a = c["area"][1:]
            n = len(a) // 2
            c = dict(c)
            c["area"] = tuple(max(1, round(a[d] * dims[d])) for d in range(len(dims))) + \
                tuple(round(a[d + n] * dims[d]) for d in range(len(dims)))
            conditions[i] = c
        if c.get("set_area_to_bounds", False):
            raise NotImplementedError("stand-in: set_area_to_bounds is not supported")
        if "mask" in c:
            mask = c["mask"].to(device=device)
            if mask.ndim == len(dims):
                mask = mask.unsqueeze(0)
            if tuple(mask.shape[1:]) != tuple(dims):
                mask = comfy.utils.common_upscale(mask.unsqueeze(1), dims[-1], dims[-2], "bilinear", "none").squeeze(1)
            c = dict(c)
            c["mask"] = mask
            conditions[i] = c


def calculate_start_end_timesteps(model, conds):
    s = model.model_sampling
    for i, x in enumerate(conds):
        start = s.percent_to_sigma(x["start_percent"]) if "start_percent" in x else None
        end = s.percent_to_sigma(x["end_percent"]) if "end_percent" in x else None
        if start is not None or end is not None:
            n = dict(x)
            if start is not None:
                n["timestep_start"] = start
            if end is not None:
                n["timestep_end"] = end
            conds[i] = n


def encode_model_conds(model_function, conds, noise, device, prompt_type, **kwargs):
    for i, x in enumerate(conds):
        params = dict(x)
        params["device"] = device
        params["noise"] = noise
        params["width"] = params.get("width", noise.shape[3] * 8)
        params["height"] = params.get("height", noise.shape[2] * 8)
        params["prompt_type"] = params.get("prompt_type", prompt_type)
        for k, v in kwargs.items():
            params.setdefault(k, v)
        out = model_function(**params)
        x = dict(x)
        x["model_conds"] = {**x["model_conds"], **out}
        conds[i] = x
    return conds


def _area_inside(a, outer):
    """Is area ``a`` (sizes..., offsets...) inside area ``outer``?"""
    d = len(a) // 2
    return all(a[d + i] >= outer[d + i] and a[i] + a[d + i] <= outer[i] + outer[d + i] for i in range(d))


def create_cond_with_same_area_if_none(conds, c):
    """Give an area cond a partner in the other cond list: a copy of ``c`` (area, mask, strength, uuid) carrying
    the model_conds of the smallest cond there that contains the area (any area-less cond counts as containing it)."""
    if "area" not in c:
        return
    smallest = None
    for x in conds:
        if "area" in x:
            if _area_inside(c["area"], x["area"]):
                if smallest is None or "area" not in smallest or \
                        math.prod(smallest["area"][:len(smallest["area"]) // 2]) > math.prod(x["area"][:len(x["area"]) // 2]):
                    smallest = x
        elif smallest is None:
            smallest = x
    if smallest is None or ("area" in smallest and smallest["area"] == c["area"]):
        return
    partner = c.copy()
    partner["model_conds"] = smallest["model_conds"].copy()
    conds.append(partner)


def process_conds(model, noise, conds, device, latent_image=None, denoise_mask=None, seed=None):
    for k in conds:
        conds[k] = conds[k][:]
        resolve_areas_and_cond_masks_multidim(conds[k], noise.shape[2:], device)
    for k in conds:
        calculate_start_end_timesteps(model, conds[k])
    if hasattr(model, "extra_conds"):
        for k in conds:
            conds[k] = encode_model_conds(model.extra_conds, conds[k], noise, device, k, latent_image=latent_image,
                                          denoise_mask=denoise_mask, seed=seed)
    for k in conds:  # every area cond gets a same-area partner in each other list
        for c in conds[k]:
            for kk in conds:
                if k != kk:
                    create_cond_with_same_area_if_none(conds[kk], c)
    return conds


def cast_to_load_options(model_options, device=None, dtype=None):
    """Call .to() on wrappers/callbacks registered for this run (real: also hook patches)."""
    if model_options is None or model_options.get("to_load_options") is None:
        return
    casts = [c for c in (device, dtype) if c is not None]
    for name in ("wrappers", "callbacks"):
        for per_type in model_options["to_load_options"].get(name, {}).values():
            for lst in per_type.values():
                for i in range(len(lst)):
                    if hasattr(lst[i], "to"):
                        for cast in casts:
                            lst[i] = lst[i].to(cast)


# --------------------------------------------------------------------------------------------------------------
# the guider
# --------------------------------------------------------------------------------------------------------------
class CFGGuider:
    def __init__(self, model_patcher):
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options
        self.original_conds = {}
        self.cfg = 1.0

    def set_conds(self, positive, negative):
        self.inner_set_conds({"positive": positive, "negative": negative})

    def set_cfg(self, cfg):
        self.cfg = cfg

    def inner_set_conds(self, conds):
        for k in conds:
            self.original_conds[k] = comfy.sampler_helpers.convert_cond(conds[k])

    def __call__(self, *args, **kwargs):
        return self.outer_predict_noise(*args, **kwargs)

    def outer_predict_noise(self, x, timestep, model_options={}, seed=None):
        return WrapperExecutor.new_class_executor(
            self.predict_noise, self,
            get_all_wrappers(WrappersMP.PREDICT_NOISE, self.model_options, is_model_options=True),
        ).execute(x, timestep, model_options, seed)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        return sampling_function(self.inner_model, x, timestep, self.conds.get("negative", None),
                                 self.conds.get("positive", None), self.cfg, model_options=model_options, seed=seed)

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed):
        if latent_image is not None and torch.count_nonzero(latent_image) > 0:  # an empty latent is not shifted
            latent_image = self.inner_model.process_latent_in(latent_image)
        self.conds = process_conds(self.inner_model, noise, self.conds, device, latent_image, denoise_mask, seed)
        extra_model_options = comfy.model_patcher.create_model_options_clone(self.model_options)
        extra_model_options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
        extra_args = {"model_options": extra_model_options, "seed": seed}
        executor = WrapperExecutor.new_class_executor(
            sampler.sample, sampler,
            get_all_wrappers(WrappersMP.SAMPLER_SAMPLE, extra_args["model_options"], is_model_options=True))
        samples = executor.execute(self, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        return self.inner_model.process_latent_out(samples.to(torch.float32))

    def outer_sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None,
                     disable_pbar=False, seed=None):
        self.inner_model, self.conds, self.loaded_models = comfy.sampler_helpers.prepare_sampling(
            self.model_patcher, noise.shape, self.conds, self.model_options)
        device = self.model_patcher.load_device
        if denoise_mask is not None:
            denoise_mask = comfy.sampler_helpers.prepare_mask(denoise_mask, noise.shape, device)
        noise = noise.to(device)
        latent_image = latent_image.to(device)
        sigmas = sigmas.to(device)
        cast_to_load_options(self.model_options, device=device, dtype=self.model_patcher.model_dtype())
        try:
            self.model_patcher.pre_run()
            output = self.inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                       disable_pbar, seed)
        finally:
            self.model_patcher.cleanup()
        comfy.sampler_helpers.cleanup_models(self.conds, self.loaded_models)
        del self.inner_model
        del self.loaded_models
        return output

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        if sigmas.shape[-1] == 0:
            return latent_image
        self.conds = {k: [c.copy() for c in v] for k, v in self.original_conds.items()}
        orig_model_options = self.model_options
        try:
            self.model_options = comfy.model_patcher.create_model_options_clone(self.model_options)
            comfy.sampler_helpers.prepare_model_patcher(self.model_patcher, self.conds, self.model_options)
            executor = WrapperExecutor.new_class_executor(
                self.outer_sample, self,
                get_all_wrappers(WrappersMP.OUTER_SAMPLE, self.model_options, is_model_options=True))
            output = executor.execute(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            cast_to_load_options(self.model_options, device=self.model_patcher.offload_device)
            self.model_options = orig_model_options
        del self.conds
        return output


def sample(model, noise, positive, negative, cfg, device, sampler, sigmas, model_options={}, latent_image=None,
           denoise_mask=None, callback=None, disable_pbar=False, seed=None):
    guider = CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider.sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)


class KSampler:
    SCHEDULERS = SCHEDULER_NAMES
    SAMPLERS = SAMPLER_NAMES

    def __init__(self, model, steps, device, sampler=None, scheduler=None, denoise=None, model_options={}):
        self.model = model
        self.device = device
        # unknown names silently fall back to the first real name, like real ("simple" / "euler"); real names the
        # stand-in lacks raise NotImplementedError when used
        if scheduler not in self.SCHEDULERS:
            scheduler = self.SCHEDULERS[0]
        if sampler not in self.SAMPLERS:
            sampler = self.SAMPLERS[0]
        self.scheduler = scheduler
        self.sampler = sampler
        self.set_steps(steps, denoise)
        self.denoise = denoise
        self.model_options = model_options

    def calculate_sigmas(self, steps):
        return calculate_sigmas(self.model.get_model_object("model_sampling"), self.scheduler, steps)

    def set_steps(self, steps, denoise=None):
        self.steps = steps
        if denoise is None or denoise > 0.9999:
            self.sigmas = self.calculate_sigmas(steps).to(self.device)
        elif denoise <= 0.0:
            self.sigmas = torch.FloatTensor([])
        else:
            # img2img: the last steps of a longer schedule
            self.sigmas = self.calculate_sigmas(int(steps / denoise)).to(self.device)[-(steps + 1):]

    def sample(self, noise, positive, negative, cfg, latent_image=None, start_step=None, last_step=None,
               force_full_denoise=False, denoise_mask=None, sigmas=None, callback=None, disable_pbar=False, seed=None):
        if sigmas is None:
            sigmas = self.sigmas
        if last_step is not None and last_step < len(sigmas) - 1:
            sigmas = sigmas[: last_step + 1]
            if force_full_denoise:
                sigmas[-1] = 0
        if start_step is not None:
            if start_step < len(sigmas) - 1:
                sigmas = sigmas[start_step:]
            else:
                return latent_image if latent_image is not None else torch.zeros_like(noise)
        return sample(self.model, noise, positive, negative, cfg, self.device, sampler_object(self.sampler), sigmas,
                      self.model_options, latent_image=latent_image, denoise_mask=denoise_mask, callback=callback,
                      disable_pbar=disable_pbar, seed=seed)
