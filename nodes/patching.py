"""Host glue shared by every StyleStudio node: validation, the schedule windows, the user's adapter roles, and
installing the one sampling mechanism (stylestudio_core.mechanism) on a cloned MODEL."""
from __future__ import annotations

# ComfyUI modules are imported where used: the pack must import without a host (pytest imports the repo's
# __init__.py as a package before any host exists).
from ..stylestudio_core import mechanism
from ..stylestudio_core.mechanism import NODE_NAMES, SETTINGS_KEY, WRAPPER_KEY, StyleStudioError
from ..stylestudio_core.routing import ROLES_SETTING

CATEGORY = "StyleStudio"


def _calc_cond_batch(executor, model, conds, x_in, timestep, model_options):
    from comfy.ldm.modules.attention import optimized_attention
    return mechanism.calc_cond_batch(executor, model, conds, x_in, timestep, model_options,
                                     attention=optimized_attention)


def _outer_sample(executor, *args):
    return mechanism.outer_sample(executor, *args, student_noise_sampler=_student_noise_sampler)


def _student_noise_sampler(sampler):
    """How `sampler` builds its per-step noise when it is given none, read from what its code calls (the sampler
    function and the functions and classes of its module it uses, nearest first): k-diffusion's
    `BrownianTreeNoiseSampler` (the dpmpp SDE family; cpu or not as the call says) or its seeded Gaussian
    `default_noise_sampler`. None if it takes no noise sampler. When its code names neither or both (a
    third-party sampler with its own noise), it gets the seeded Gaussian and one warning: the teacher still gets
    exactly the students' draws, but the students may differ from a run without the teacher."""
    import inspect

    import comfy.k_diffusion.sampling as kds
    function = getattr(sampler, "sampler_function", None)
    try:
        takes_noise = function is not None and "noise_sampler" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        takes_noise = False
    if not takes_noise:
        return None
    kind, cpu = _noise_builder_of(function)
    if kind == "brownian":
        def brownian(template, sigmas, seed):
            positive = sigmas[sigmas > 0]
            return kds.BrownianTreeNoiseSampler(template, positive.min(), sigmas.max(), seed=seed, cpu=cpu)
        return brownian
    if kind is None:
        mechanism.log.warning(
            "%s: cannot tell how sampler %s draws its per-step noise; the teacher gets exactly your images' "
            "draws (seeded Gaussian), but your images may differ from a run without the teacher. Use a "
            "ComfyUI sampler (e.g. euler_ancestral, dpmpp_2m_sde) for an exact teacher.",
            NODE_NAMES["teacher"], getattr(function, "__qualname__", repr(function)))
    return lambda template, sigmas, seed: kds.default_noise_sampler(template, seed=seed)


_BUILDERS = {"BrownianTreeNoiseSampler": "brownian", "default_noise_sampler": "gaussian"}
_OWN_DRAWS = {"randn", "randn_like", "normal", "normal_"}  # noise drawn outside k-diffusion's builders


def _noise_builder_of(function, depth: int = 4):
    """("brownian", cpu) / ("gaussian", None) / (None, None): the noise builder `function`'s code calls, looking
    through the functions and classes it reaches (by name or module attribute), level by level: the nearest level
    that names a builder or draws with torch itself decides; two kinds there, or a draw of its own, is unknown."""
    import functools
    import inspect
    import sys

    def codes(code):
        yield code
        for const in code.co_consts:
            if inspect.iscode(const):
                yield from codes(const)

    seen, frontier = set(), [function]
    for _ in range(depth + 1):
        found, following = {}, []
        for f in frontier:
            while isinstance(f, functools.partial):
                f = f.func
            f = inspect.unwrap(f)
            code, scope = getattr(f, "__code__", None), getattr(f, "__globals__", {})
            if code is None or code in seen:
                continue
            seen.add(code)
            for c in codes(code):
                # modules it reaches by attribute (`kds.sample_x(...)`, also when imported inside the function)
                modules = [m for m in (scope.get(n) or sys.modules.get(n) for n in c.co_names) if inspect.ismodule(m)]
                if any(n in _OWN_DRAWS for n in c.co_names):
                    found.setdefault("own", c)
                for n in c.co_names:
                    if n in _BUILDERS:
                        found.setdefault(_BUILDERS[n], c)
                    for target in [scope.get(n)] + [getattr(m, n, None) for m in modules]:
                        if inspect.isfunction(target):
                            following.append(target)
                        elif inspect.isclass(target) and target.__module__ == getattr(f, "__module__", None):
                            following += [m for m in vars(target).values() if inspect.isfunction(m)]
        if len(found) == 1:
            kind, code = next(iter(found.items()))
            if kind != "brownian":
                return (kind, None) if kind == "gaussian" else (None, None)
            flags = {c for c in code.co_consts if c is True or c is False}  # the call's cpu= literal
            return kind, flags != {False}
        if found or not following:
            return None, None
        frontier = following
    return None, None


def check_unet(model, feature: str):
    """StyleStudio patches UNet attention blocks (SD1.5/SDXL family, what IP-Adapter supports)."""
    try:
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    except ImportError:  # pragma: no cover - every ComfyUI release has it
        UNetModel = None
    diffusion_model = getattr(getattr(model, "model", None), "diffusion_model", None)
    if UNetModel is None or not isinstance(diffusion_model, UNetModel):
        family = type(diffusion_model).__name__ if diffusion_model is not None else type(model).__name__
        raise StyleStudioError(
            f"{NODE_NAMES[feature]}: this model is a {family}, not a UNet. StyleStudio works on UNet models "
            "(SD1.5, SDXL and their fine-tunes), the families IP-Adapter supports. Connect a MODEL from an "
            "SD1.5 or SDXL checkpoint.")


def check_range(feature: str, name: str, value, low: float, high: float):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (low <= float(value) <= high):
        raise StyleStudioError(f"{NODE_NAMES[feature]}: {name} must be a number in [{low}, {high}], got {value!r}.")


def check_window(feature: str, start_at: float, end_at: float):
    check_range(feature, "start_at", start_at, 0.0, 1.0)
    check_range(feature, "end_at", end_at, 0.0, 1.0)
    if end_at < start_at:
        raise StyleStudioError(f"{NODE_NAMES[feature]}: end_at ({end_at}) is before start_at ({start_at}); "
                               "set end_at >= start_at (fractions of the schedule, 0 = first step).")


def schedule_window(start_at: float, end_at: float) -> dict:
    """A feature's window as fractions of the schedule (ComfyUI's start/end-percent convention, as ControlNet and
    IPAdapter nodes use it). They become sigmas at sampling time, against the model sampling that actually
    samples (mechanism.resolve_window), so a ModelSampling node before or after the StyleStudio node moves the
    window with the schedule."""
    return {"start_at": float(start_at), "end_at": float(end_at)}


ROLE_CHOICES = ("style", "identity")
ROLES_HELP = ("'auto', or 'N=style' / 'N=identity' (N = 1 for the first IP-Adapter applied along the MODEL path) "
              "and 'all=style' / 'all=identity', separated by commas, e.g. '2=identity'")


def adapter_roles(spec: str, feature: str = ROLES_SETTING) -> dict | None:
    """Parse the user's style/identity choice for the IP-Adapters on the MODEL path into the `roles` setting
    (routing.callback_role). `spec`: "auto" (or empty) = decide by what each adapter declares or shows;
    "all=style" / "all=identity" = the role of every adapter that cannot be told (detected face/identity
    adapters keep theirs); "2=identity, 3=style" = by position, 1 = the first adapter applied to the model
    (the order of the IPAdapter nodes along the MODEL path); the forms combine ("all=identity, 1=style").
    Case, spaces around "=" and ";" or spaces as separators are accepted; errors name `feature`'s node."""
    import re
    if not isinstance(spec, str):
        raise StyleStudioError(f"{NODE_NAMES[feature]}: roles must be text ({ROLES_HELP}), got {spec!r}.")
    text = re.sub(r"\s*=\s*", "=", spec.strip().lower())
    roles: dict = {"default": None, "by_position": {}}
    for part in re.split(r"[,;\s]+", text):
        if part in ("", "auto"):
            continue
        where, sep, role = part.partition("=")
        if not sep or role not in ROLE_CHOICES:
            raise StyleStudioError(f"{NODE_NAMES[feature]}: roles: {part!r} is not 'N=style', 'N=identity', "
                                   f"'all=style' or 'all=identity'. Write {ROLES_HELP}.")
        if where == "all":
            key, chosen = "all", roles["default"]
        elif re.fullmatch(r"[0-9]+", where) and int(where) >= 1:
            key, chosen = int(where), roles["by_position"].get(int(where))
        else:
            raise StyleStudioError(f"{NODE_NAMES[feature]}: roles: {where!r} in {part!r} is not an adapter "
                                   "number (1 = the first IP-Adapter on the MODEL path, 2, ...) or 'all'.")
        if chosen is not None and chosen != role:
            raise StyleStudioError(f"{NODE_NAMES[feature]}: roles: adapter {key} is given both {chosen!r} and "
                                   f"{role!r}; keep one.")
        if key == "all":
            roles["default"] = role
        else:
            roles["by_position"][key] = role
    if roles["default"] is None and not roles["by_position"]:
        return None  # "auto": nothing chosen
    return roles


def with_adapter_roles(model, spec: str, feature: str = ROLES_SETTING):
    """A clone of `model` whose StyleStudio settings carry the user's adapter roles (one entry for the model, read
    by every feature; "auto" clears an earlier choice)."""
    return patched(model, ROLES_SETTING, adapter_roles(spec, feature))


def _share_structure(options):
    """What clone() would give, minus the copies of other nodes' objects: dicts, lists and tuples are copied (so
    this model's slots and settings are its own), everything else (patch objects, their tensors, an
    IP-Adapter's whole module) is shared with the input model."""
    if isinstance(options, dict):
        return {k: _share_structure(v) for k, v in options.items()}
    if isinstance(options, list):
        return [_share_structure(v) for v in options]
    if isinstance(options, tuple) and type(options) is tuple:
        return tuple(_share_structure(v) for v in options)
    return options


class _SharedOnDeepcopy(dict):
    # ModelPatcher.clone() deep-copies model_options (host.md §2); handed this for the length of one clone() call,
    # it gets `_share_structure` instead: no second copy of the adapters' weights, the input model untouched.
    def __deepcopy__(self, memo):
        return _share_structure(dict(self))


def clone_sharing_patches(model):
    """model.clone() without deep-copying other nodes' patch objects. StyleStudio never changes them (its routes
    live in a per-call copy of the options), so sharing them is safe, and an IPAdapter module is not duplicated
    per StyleStudio node (ComfyUI_IPAdapter_plus keeps the whole module in its patches' kwargs)."""
    options = model.model_options
    model.model_options = _SharedOnDeepcopy(options)
    try:
        m = model.clone()
    finally:
        model.model_options = options
    if type(m.model_options) is not dict:  # a clone() that copies some other way: plain dict, same content
        m.model_options = _share_structure(dict(m.model_options))
    return m


def patched(model, feature: str, settings: dict | None):
    """A clone of `model` with `feature`'s settings (None = switched off, which also clears the settings of an
    earlier node of the same kind) and the shared mechanism installed once."""
    import comfy.patcher_extension
    if not hasattr(comfy.patcher_extension, "WrappersMP"):
        raise StyleStudioError(f"{NODE_NAMES[feature]}: this ComfyUI is too old (no model wrappers). "
                               "Update ComfyUI to v0.3.10 or newer.")
    m = clone_sharing_patches(model)
    to = m.model_options.setdefault("transformer_options", {})
    all_settings = {k: dict(v) for k, v in to.get(SETTINGS_KEY, {}).items() if k != feature}
    if settings is not None:
        all_settings[feature] = settings
    to[SETTINGS_KEY] = all_settings

    wrappers = comfy.patcher_extension.WrappersMP
    for kind, fn in ((wrappers.OUTER_SAMPLE, _outer_sample),
                     (wrappers.CALC_COND_BATCH, _calc_cond_batch)):
        m.remove_wrappers_with_key(kind, WRAPPER_KEY)  # one mechanism per model, however many nodes
        m.add_wrapper_with_key(kind, WRAPPER_KEY, fn)
    if feature == "guidance":
        post = [f for f in m.model_options.get("sampler_post_cfg_function", [])
                if not getattr(f, "stylestudio", False)]
        # First in the chain, so later post-cfg patches see the split-scale result.
        m.model_options["sampler_post_cfg_function"] = [mechanism.post_cfg] + post
    return m
