"""Stand-in of comfy/sampler_helpers.py: cond conversion, model "loading" and wrapper registration for a run.

``prepare_model_patcher`` merges the patcher's wrappers and callbacks into
``model_options["transformer_options"]["wrappers"/"callbacks"]`` (and ``to_load_options``) exactly like real,
which is how a wrapper added with ``ModelPatcher.add_wrapper_with_key`` reaches every executor of the run.
``prepare_sampling`` loads the patcher through comfy.model_management.load_models_gpu (the .to() slot
replacement happens there). Additional models (``set_additional_models``) are loaded with the patcher and returned, as real.
Simplified: no hooks, ControlNets or GLIGEN.
"""
from __future__ import annotations

import uuid

import comfy.model_management
import comfy.patcher_extension
import comfy.utils


def prepare_mask(noise_mask, shape, device):
    return comfy.utils.reshape_mask(noise_mask, shape).to(device)


def convert_cond(cond):
    """[[tensor, {opts}], ...] -> [{**opts, "cross_attn": tensor, "model_conds": {...}, "uuid": uuid4()}, ...]"""
    out = []
    for tensor, opts in cond:
        c = opts.copy()
        c["model_conds"] = c.get("model_conds", {})
        if tensor is not None:
            c["cross_attn"] = tensor
        c["uuid"] = uuid.uuid4()
        out.append(c)
    return out


def prepare_sampling(model, noise_shape, conds, model_options=None):
    executor = comfy.patcher_extension.WrapperExecutor.new_executor(
        _prepare_sampling,
        comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, model_options,
                                                 is_model_options=True))
    return executor.execute(model, noise_shape, conds, model_options=model_options)


def _prepare_sampling(model, noise_shape, conds, model_options=None):
    # the MODEL's additional models (ModelPatcher.set_additional_models) are loaded with it, as real
    models = model.get_nested_additional_models()
    comfy.model_management.load_models_gpu([model] + models)
    return model.model, conds, models


def cleanup_models(conds, models):
    for m in models:
        if hasattr(m, "cleanup"):
            m.cleanup()


def prepare_model_patcher(model, conds, model_options: dict):
    to = model_options["transformer_options"]
    comfy.patcher_extension.merge_nested_dicts(to.setdefault("wrappers", {}), model.wrappers, copy_dict1=False)
    comfy.patcher_extension.merge_nested_dicts(to.setdefault("callbacks", {}), model.callbacks, copy_dict1=False)
    to_load = model_options.setdefault("to_load_options", {})
    for name in ("wrappers", "callbacks"):
        comfy.patcher_extension.merge_nested_dicts(to_load.setdefault(name, {}), to[name], copy_dict1=False)
    return to_load
