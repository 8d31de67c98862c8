"""Stand-in of comfy/model_patcher.py: ModelPatcher without weight patching.

Kept exactly: ``clone()`` shares the model and DEEP-copies ``model_options`` (copy.deepcopy: patch objects and
their tensors are copied, plain functions stay shared), copies the wrapper/callback dict-of-lists (callables
shared), sets ``parent`` and fires ON_CLONE; every patch setter writes the same model_options keys as real
(attn1/attn2 replace keys are (block_name, number) or (block_name, number, transformer_index) -- the 4th
argument is the block index inside the SpatialTransformer, despite its name); ``model_patches_to(x)``
replaces every patch that has ``.to`` in its slot by what ``.to(x)`` returns (called with the load device and
then the dtype by comfy.model_management.load_models_gpu, and with the offload device on detach);
pre_run / cleanup / prepare_state fire ON_PRE_RUN / ON_CLEANUP / ON_PREPARE_STATE.
``object_patches`` (e.g. a ModelSampling node's "model_sampling") are set on the model when it is loaded
(comfy.model_management.load_models_gpu -> ``apply_object_patches``, the object-patch part of real
``patch_model``) and restored on unload, with the originals in ``object_patches_backup`` (shared by clones, as
real); before that they are only visible through get_model_object.
Simplified: no LoRA/weight patches (add_patches only records them), no hooks, no lowvram, no injections
beyond storage.
"""
from __future__ import annotations

import copy
import inspect
import uuid
from typing import Callable

import comfy.model_management
import comfy.patcher_extension
import comfy.utils
from comfy.patcher_extension import CallbacksMP, WrappersMP


def set_model_options_patch_replace(model_options, patch, name, block_name, number, transformer_index=None):
    # copy-on-write down to the slot dict, like real (a patcher that shares dicts with another is not affected)
    to = dict(model_options["transformer_options"])
    to["patches_replace"] = dict(to.get("patches_replace", {}))
    to["patches_replace"][name] = dict(to["patches_replace"].get(name, {}))
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    to["patches_replace"][name][key] = patch
    model_options["transformer_options"] = to
    return model_options


def set_model_options_post_cfg_function(model_options, post_cfg_function, disable_cfg1_optimization=False):
    model_options["sampler_post_cfg_function"] = model_options.get("sampler_post_cfg_function", []) + [post_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def set_model_options_pre_cfg_function(model_options, pre_cfg_function, disable_cfg1_optimization=False):
    model_options["sampler_pre_cfg_function"] = model_options.get("sampler_pre_cfg_function", []) + [pre_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def create_model_options_clone(orig_model_options: dict):
    return comfy.patcher_extension.copy_nested_dicts(orig_model_options)


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.size = size
        self.model = model
        if getattr(self.model, "device", None) is None:
            self.model.device = offload_device
        self.patches = {}
        self.backup = {}
        self.object_patches = {}
        self.object_patches_backup = {}
        self.weight_wrapper_patches = {}
        self.model_options = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        self.weight_inplace_update = weight_inplace_update
        self.patches_uuid = uuid.uuid4()
        self.parent = None
        self.attachments: dict = {}
        self.additional_models: dict = {}
        self.callbacks: dict = CallbacksMP.init_callbacks()
        self.wrappers: dict = WrappersMP.init_wrappers()
        self.injections: dict = {}
        self.is_clip = False
        self.hook_mode = None
        self.model_size()

    def model_size(self):
        if self.size <= 0:
            self.size = comfy.model_management.module_size(self.model)
        return self.size

    def clone(self):
        n = self.__class__(self.model, self.load_device, self.offload_device, self.size,
                           weight_inplace_update=self.weight_inplace_update)
        n.patches = {k: v[:] for k, v in self.patches.items()}
        n.patches_uuid = self.patches_uuid
        n.object_patches = self.object_patches.copy()
        n.weight_wrapper_patches = self.weight_wrapper_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        n.backup = self.backup
        n.object_patches_backup = self.object_patches_backup
        n.parent = self
        n.attachments = {k: (a.on_model_patcher_clone() if hasattr(a, "on_model_patcher_clone") else a)
                         for k, a in self.attachments.items()}
        n.additional_models = {k: [m.clone() for m in ms] for k, ms in self.additional_models.items()}
        n.callbacks = {t: {k: lst.copy() for k, lst in d.items()} for t, d in self.callbacks.items()}
        n.wrappers = {t: {k: lst.copy() for k, lst in d.items()} for t, d in self.wrappers.items()}
        n.injections = {k: v.copy() for k, v in self.injections.items()}
        for cb in self.get_all_callbacks(CallbacksMP.ON_CLONE):
            cb(self, n)
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def memory_required(self, input_shape):
        return self.model.memory_required(input_shape=input_shape)

    # --- sampler-level options -------------------------------------------------------------------------------
    def set_model_sampler_cfg_function(self, sampler_cfg_function, disable_cfg1_optimization=False):
        if len(inspect.signature(sampler_cfg_function).parameters) == 3:  # old (cond, uncond, scale) form
            self.model_options["sampler_cfg_function"] = lambda args: sampler_cfg_function(args["cond"], args["uncond"], args["cond_scale"])
        else:
            self.model_options["sampler_cfg_function"] = sampler_cfg_function
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_post_cfg_function(self, post_cfg_function, disable_cfg1_optimization=False):
        self.model_options = set_model_options_post_cfg_function(self.model_options, post_cfg_function, disable_cfg1_optimization)

    def set_model_sampler_pre_cfg_function(self, pre_cfg_function, disable_cfg1_optimization=False):
        self.model_options = set_model_options_pre_cfg_function(self.model_options, pre_cfg_function, disable_cfg1_optimization)

    def set_model_sampler_calc_cond_batch_function(self, fn):
        self.model_options["sampler_calc_cond_batch_function"] = fn

    def set_model_unet_function_wrapper(self, unet_wrapper_function):
        self.model_options["model_function_wrapper"] = unet_wrapper_function

    def set_model_denoise_mask_function(self, denoise_mask_function):
        self.model_options["denoise_mask_function"] = denoise_mask_function

    # --- transformer patches ---------------------------------------------------------------------------------
    def set_model_patch(self, patch, name):
        to = self.model_options["transformer_options"]
        to.setdefault("patches", {})
        to["patches"][name] = to["patches"].get(name, []) + [patch]  # a new list, like real

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        self.model_options = set_model_options_patch_replace(self.model_options, patch, name, block_name, number,
                                                             transformer_index=transformer_index)

    def set_model_attn1_patch(self, patch):
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch):
        self.set_model_patch(patch, "attn2_patch")

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch, block_name, number, transformer_index=None):
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)

    def set_model_attn1_output_patch(self, patch):
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn2_output_patch(self, patch):
        self.set_model_patch(patch, "attn2_output_patch")

    def set_model_input_block_patch(self, patch):
        self.set_model_patch(patch, "input_block_patch")

    def set_model_input_block_patch_after_skip(self, patch):
        self.set_model_patch(patch, "input_block_patch_after_skip")

    def set_model_output_block_patch(self, patch):
        self.set_model_patch(patch, "output_block_patch")

    def set_model_emb_patch(self, patch):
        self.set_model_patch(patch, "emb_patch")

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        # recorded only: the stand-in never applies weight patches
        for k, v in patches.items():
            self.patches.setdefault(k, []).append((strength_patch, v, strength_model, None, None))
        self.patches_uuid = uuid.uuid4()
        return list(patches.keys())

    def get_model_object(self, name: str):
        if name in self.object_patches:
            return self.object_patches[name]
        if name in self.object_patches_backup:
            return self.object_patches_backup[name]
        return comfy.utils.get_attr(self.model, name)

    def model_patches_to(self, device):
        """The .to() slot replacement: every patch with a ``to`` attribute becomes ``patch.to(device)``."""
        to = self.model_options["transformer_options"]
        for lst in to.get("patches", {}).values():
            for i in range(len(lst)):
                if hasattr(lst[i], "to"):
                    lst[i] = lst[i].to(device)
        for slots in to.get("patches_replace", {}).values():
            for k in slots:
                if hasattr(slots[k], "to"):
                    slots[k] = slots[k].to(device)
        wrap = self.model_options.get("model_function_wrapper")
        if hasattr(wrap, "to"):
            self.model_options["model_function_wrapper"] = wrap.to(device)

    def model_patches_models(self):
        return []

    def model_dtype(self):
        if hasattr(self.model, "get_dtype"):
            return self.model.get_dtype()

    def current_loaded_device(self):
        return self.model.device

    def loaded_size(self):
        return self.size

    def apply_object_patches(self):
        """Real patch_model's object patches: the loaded model's attributes become this patcher's objects."""
        self.restore_object_patches()  # another clone's objects leave first
        for name, obj in self.object_patches.items():
            old = comfy.utils.set_attr(self.model, name, obj)
            self.object_patches_backup.setdefault(name, old)

    def restore_object_patches(self):
        for name, old in self.object_patches_backup.items():
            comfy.utils.set_attr(self.model, name, old)
        self.object_patches_backup.clear()

    def detach(self, unpatch_all=True):
        if unpatch_all:
            self.restore_object_patches()
        self.model_patches_to(self.offload_device)
        for cb in self.get_all_callbacks(CallbacksMP.ON_DETACH):
            cb(self, unpatch_all)
        return self.model

    # --- run lifecycle ---------------------------------------------------------------------------------------
    def pre_run(self):
        if hasattr(self.model, "current_patcher"):
            self.model.current_patcher = self
        for cb in self.get_all_callbacks(CallbacksMP.ON_PRE_RUN):
            cb(self)

    def prepare_state(self, timestep):
        for cb in self.get_all_callbacks(CallbacksMP.ON_PREPARE_STATE):
            cb(self, timestep)

    def cleanup(self):
        if hasattr(self.model, "current_patcher"):
            self.model.current_patcher = None
        for cb in self.get_all_callbacks(CallbacksMP.ON_CLEANUP):
            cb(self)

    def apply_hooks(self, hooks, transformer_options=None, force_apply=False):
        # no hooks in the stand-in: real returns {} when hooks is None
        if hooks is not None:
            raise NotImplementedError("stand-in: hooks are not supported")
        return {}

    def restore_hook_patches(self):
        pass

    # --- callbacks / wrappers / attachments ------------------------------------------------------------------
    def add_callback(self, call_type: str, callback: Callable):
        self.add_callback_with_key(call_type, None, callback)

    def add_callback_with_key(self, call_type: str, key, callback: Callable):
        self.callbacks.setdefault(call_type, {}).setdefault(key, []).append(callback)

    def remove_callbacks_with_key(self, call_type: str, key):
        self.callbacks.get(call_type, {}).pop(key, None)

    def get_callbacks(self, call_type: str, key):
        return self.callbacks.get(call_type, {}).get(key, [])

    def get_all_callbacks(self, call_type: str):
        out = []
        for lst in self.callbacks.get(call_type, {}).values():
            out.extend(lst)
        return out

    def add_wrapper(self, wrapper_type: str, wrapper: Callable):
        self.add_wrapper_with_key(wrapper_type, None, wrapper)

    def add_wrapper_with_key(self, wrapper_type: str, key, wrapper: Callable):
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def remove_wrappers_with_key(self, wrapper_type: str, key):
        self.wrappers.get(wrapper_type, {}).pop(key, None)

    def get_wrappers(self, wrapper_type: str, key):
        return self.wrappers.get(wrapper_type, {}).get(key, [])

    def get_all_wrappers(self, wrapper_type: str):
        out = []
        for lst in self.wrappers.get(wrapper_type, {}).values():
            out.extend(lst)
        return out

    def set_attachments(self, key: str, attachment):
        self.attachments[key] = attachment

    def remove_attachments(self, key: str):
        self.attachments.pop(key, None)

    def get_attachment(self, key: str):
        return self.attachments.get(key, None)

    def set_injections(self, key: str, injections):
        self.injections[key] = injections

    def remove_injections(self, key: str):
        self.injections.pop(key, None)

    def get_injections(self, key: str):
        return self.injections.get(key, None)

    def set_additional_models(self, key: str, models):
        self.additional_models[key] = models

    def remove_additional_models(self, key: str):
        self.additional_models.pop(key, None)

    def get_additional_models_with_key(self, key: str):
        return self.additional_models.get(key, [])

    def get_additional_models(self):
        return [m for ms in self.additional_models.values() for m in ms]

    def get_nested_additional_models(self):
        return self.get_additional_models()
