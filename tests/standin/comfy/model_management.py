"""Stand-in of comfy/model_management.py: CPU only, plus the one piece of model loading that patches see.

What is kept from the real module:
* ``get_free_memory`` drives calc_cond_batch's batching decision (tests monkeypatch it to 0 to force one
  forward per chunk, as ComfyUI does when memory is short).
* ``load_models_gpu`` keeps a list of loaded patchers like the real ``current_loaded_models``: a patcher that is
  not loaded yet gets ``model_patches_to(load_device)`` then ``model_patches_to(model_dtype())`` (the real
  ``LoadedModel.model_load``) -- this is where patch objects with ``.to()`` are replaced in their slots; a
  patcher already loaded is not touched again; loading a different clone of the same model first detaches
  the loaded one (``detach(unpatch_all=False)`` -> ``model_patches_to(offload_device)``); loading applies the
  patcher's object patches (``apply_object_patches``: another clone's objects are restored first).
Simplified: no VRAM states, no lowvram/partial loading, no weight patching, no parent switch when a loaded
clone is garbage-collected (its entry is simply dropped).
"""
from __future__ import annotations

import weakref

import torch

# Large enough that every tiny batch fits (real: free VRAM, or available RAM on CPU).
FREE_MEMORY = 64 * 1024 ** 3


class InterruptProcessingException(Exception):
    pass


interrupt_processing = False


def interrupt_current_processing(value=True):
    global interrupt_processing
    interrupt_processing = value


def processing_interrupted():
    return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    if interrupt_processing:
        interrupt_processing = False
        raise InterruptProcessingException()


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def unet_dtype(*args, **kwargs):
    return torch.float32


def get_free_memory(dev=None, torch_free_too=False):
    if torch_free_too:
        return (FREE_MEMORY, FREE_MEMORY)
    return FREE_MEMORY


def is_device_cpu(device):
    return torch.device(device).type == "cpu"


def cast_to_device(tensor, device, dtype, copy=False):
    return tensor.to(device=device, dtype=dtype, copy=copy)


def module_size(module):
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def soft_empty_cache(force=False):
    pass


# --- loading ------------------------------------------------------------------------------------------------
current_loaded_models: list = []  # weakrefs to ModelPatcher, most recently loaded first


def _alive():
    current_loaded_models[:] = [r for r in current_loaded_models if r() is not None]
    return [r() for r in current_loaded_models]


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    for m in models:
        loaded = _alive()
        if any(x is m for x in loaded):
            continue  # already loaded: real ComfyUI does not call model_load (nor .to() on patches) again
        for i in reversed(range(len(loaded))):
            if loaded[i].is_clone(m):  # another patcher of the same weights: detach it first
                current_loaded_models.pop(i)
                loaded[i].detach(unpatch_all=False)
        # LoadedModel.model_load: the .to() slot replacement (device, then dtype)
        m.model_patches_to(m.load_device)
        m.model_patches_to(m.model_dtype())
        m.apply_object_patches()  # patch_model: object patches (e.g. a ModelSampling node's) go on the model
        current_loaded_models.insert(0, weakref.ref(m))


def load_model_gpu(model):
    return load_models_gpu([model])


def loaded_models(only_currently_used=False):
    return _alive()


def unload_all_models():
    for m in _alive():
        m.detach(unpatch_all=True)
    current_loaded_models.clear()


def cleanup_models_gc():
    _alive()
