"""Stand-in of comfy/patcher_extension.py: wrapper/callback registries and the WrapperExecutor call chain.

Same constants, same dict layout ({type: {key: [callables]}}) and the same call protocol as the real module:
a wrapper is called as ``wrapper(executor, *args, **kwargs)`` and continues the chain with
``executor(*args, **kwargs)``; ``executor.class_obj`` is the object whose method is being wrapped (or None).
Simplified: PatcherInjection is kept only as a plain holder (no injection machinery elsewhere).
"""
from __future__ import annotations

from typing import Callable


class CallbacksMP:
    # string values are the real ones (callers may key dicts by them)
    ON_CLONE = "on_clone"
    ON_LOAD = "on_load_after"
    ON_DETACH = "on_detach_after"
    ON_CLEANUP = "on_cleanup"
    ON_PRE_RUN = "on_pre_run"
    ON_PREPARE_STATE = "on_prepare_state"
    ON_APPLY_HOOKS = "on_apply_hooks"
    ON_REGISTER_ALL_HOOK_PATCHES = "on_register_all_hook_patches"
    ON_INJECT_MODEL = "on_inject_model"
    ON_EJECT_MODEL = "on_eject_model"

    @classmethod
    def init_callbacks(cls) -> dict:
        return {}


class WrappersMP:
    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    SAMPLER_SAMPLE = "sampler_sample"
    PREDICT_NOISE = "predict_noise"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"

    @classmethod
    def init_wrappers(cls) -> dict:
        return {}


def _registry(options: dict, name: str, is_model_options: bool, create: bool) -> dict:
    # model_options keep the registries one level down, under "transformer_options" (like real)
    if is_model_options:
        options = options.setdefault("transformer_options", {}) if create else options.get("transformer_options", {})
    return options.setdefault(name, {}) if create else options.get(name, {})


def add_callback(call_type: str, callback: Callable, transformer_options: dict, is_model_options=False):
    add_callback_with_key(call_type, None, callback, transformer_options, is_model_options)


def add_callback_with_key(call_type: str, key, callback: Callable, transformer_options: dict, is_model_options=False):
    reg = _registry(transformer_options, "callbacks", is_model_options, True)
    reg.setdefault(call_type, {}).setdefault(key, []).append(callback)


def get_callbacks_with_key(call_type: str, key, transformer_options: dict, is_model_options=False):
    return list(_registry(transformer_options, "callbacks", is_model_options, False).get(call_type, {}).get(key, []))


def get_all_callbacks(call_type: str, transformer_options: dict, is_model_options=False):
    out = []
    for lst in _registry(transformer_options, "callbacks", is_model_options, False).get(call_type, {}).values():
        out.extend(lst)
    return out


def add_wrapper(wrapper_type: str, wrapper: Callable, transformer_options: dict, is_model_options=False):
    add_wrapper_with_key(wrapper_type, None, wrapper, transformer_options, is_model_options)


def add_wrapper_with_key(wrapper_type: str, key, wrapper: Callable, transformer_options: dict, is_model_options=False):
    reg = _registry(transformer_options, "wrappers", is_model_options, True)
    reg.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)


def get_wrappers_with_key(wrapper_type: str, key, transformer_options: dict, is_model_options=False):
    return list(_registry(transformer_options, "wrappers", is_model_options, False).get(wrapper_type, {}).get(key, []))


def get_all_wrappers(wrapper_type: str, transformer_options: dict, is_model_options=False):
    # flattened in key-insertion order, each key's list in order: the first wrapper is the outermost
    out = []
    for lst in _registry(transformer_options, "wrappers", is_model_options, False).get(wrapper_type, {}).values():
        out.extend(lst)
    return out


class WrapperExecutor:
    """One position in a wrapper chain around ``original`` (mirrors the real class and its public API)."""

    def __init__(self, original: Callable, class_obj: object, wrappers: list, idx: int):
        self.original = original
        self.class_obj = class_obj
        self.wrappers = list(wrappers)
        self.idx = idx
        self.is_last = idx == len(self.wrappers)

    def __call__(self, *args, **kwargs):
        """Continue the chain: next wrapper, or the original once all wrappers ran."""
        if self.idx + 1 > len(self.wrappers):
            raise Exception("Wrapper idx exceeded available wrappers; something went very wrong.")
        nxt = type(self)(self.original, self.class_obj, self.wrappers, self.idx + 1)
        return nxt.execute(*args, **kwargs)

    def execute(self, *args, **kwargs):
        """Start the chain (internal use; a wrapper continues with ``executor(...)``)."""
        if self.is_last:
            return self.original(*args, **kwargs)
        return self.wrappers[self.idx](self, *args, **kwargs)

    @classmethod
    def new_executor(cls, original: Callable, wrappers: list, idx=0):
        return cls(original, None, wrappers, idx)

    @classmethod
    def new_class_executor(cls, original: Callable, class_obj: object, wrappers: list, idx=0):
        return cls(original, class_obj, wrappers, idx)


class PatcherInjection:
    def __init__(self, inject: Callable, eject: Callable):
        self.inject = inject
        self.eject = eject


def copy_nested_dicts(input_dict: dict) -> dict:
    """Copy every nested dict and every list (one level: list items are shared, like real)."""
    out = dict(input_dict)
    for k, v in input_dict.items():
        if isinstance(v, dict):
            out[k] = copy_nested_dicts(v)
        elif isinstance(v, list):
            out[k] = list(v)
    return out


def merge_nested_dicts(dict1: dict, dict2: dict, copy_dict1=True) -> dict:
    """Merge dict2 into (a nested copy of) dict1: dicts recurse, lists extend, other values overwrite.

    Like the real function, a nested dict is rebuilt as ``merge(dict2_value, dict1_value)`` -- the argument
    order flips one level down, so at depth >= 1 list items from dict2's branch come first.
    """
    merged = copy_nested_dicts(dict1) if copy_dict1 else dict1
    for k, v in dict2.items():
        if isinstance(v, dict):
            merged[k] = merge_nested_dicts(v, merged.setdefault(k, {}))
        elif isinstance(v, list):
            merged.setdefault(k, []).extend(v)
        else:
            merged[k] = v
    return merged
