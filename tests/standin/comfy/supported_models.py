"""Stand-in of comfy/supported_models.py: model configs for SD1.5, SDXL and a non-UNet (Flux-like) model.

``SD15.unet_config`` / ``SDXL.unet_config`` carry the REAL layouts (transformer depths, context_dim 768 / 2048,
adm 2816 for SDXL, linear vs conv projections). ``tiny_unet_config(arch, ...)`` shrinks only what does not
change patch keys: model_channels (default 32, so widths 32/64/128), SDXL's head width (32), and the depth of
each SpatialTransformer via ``depth_override`` (depth = min(real depth, depth_override), default 1 -- the same
reduction the real-host tier uses). Block ids and
``transformer_index`` values are unaffected by depth; only block_index values >= depth_override disappear.
Simplified: no state-dict detection, no CLIP/VAE targets, no fp8/manual cast.
"""
from __future__ import annotations

import copy

import comfy.latent_formats
import comfy.model_base


class BASE:
    unet_config: dict = {}
    unet_extra_config = {"num_heads": -1, "num_head_channels": 64}
    sampling_settings: dict = {}
    latent_format = comfy.latent_formats.LatentFormat
    memory_usage_factor = 2.0
    manual_cast_dtype = None
    custom_operations = None
    scaled_fp8 = None
    optimizations = {"fp8": False}

    def __init__(self, unet_config):
        self.unet_config = dict(unet_config)
        self.sampling_settings = dict(self.sampling_settings)
        self.latent_format = self.latent_format()

    def get_model(self, state_dict=None, prefix="", device=None):
        return comfy.model_base.BaseModel(self, device=device)


class SD15(BASE):
    unet_config = {
        "context_dim": 768, "model_channels": 320, "use_linear_in_transformer": False, "adm_in_channels": None,
        "in_channels": 4, "out_channels": 4, "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
        # per output block, listed from the LAST output block's level upwards (the UNet pops from the end):
        # output 0..2 (deepest level) -> 0, output 3..11 -> 1
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "num_heads": 8, "num_head_channels": -1,
    }
    latent_format = comfy.latent_formats.SD15
    memory_usage_factor = 1.0


class SDXL(BASE):
    unet_config = {
        "context_dim": 2048, "model_channels": 320, "use_linear_in_transformer": True, "adm_in_channels": 2816,
        "num_classes": "sequential", "in_channels": 4, "out_channels": 4, "num_res_blocks": 2,
        "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],  # popped from the end: output 0..2 -> 10
        "num_heads": -1, "num_head_channels": 64,
    }
    latent_format = comfy.latent_formats.SDXL
    memory_usage_factor = 0.8

    def get_model(self, state_dict=None, prefix="", device=None):
        return comfy.model_base.SDXL(self, device=device)


class Flux(BASE):
    unet_config = {"in_channels": 4, "out_channels": 4, "hidden_size": 32, "num_heads": 2, "context_in_dim": 64,
                   "vec_in_dim": 32, "patch_size": 2}
    latent_format = comfy.latent_formats.Flux
    memory_usage_factor = 2.8

    def get_model(self, state_dict=None, prefix="", device=None):
        return comfy.model_base.Flux(self, device=device)


def tiny_unet_config(arch: str, model_channels: int = 32, head_channels: int = 32, depth_override=1) -> dict:
    """The real unet_config of ``arch`` ("sdxl"/"sd15") with tiny widths (and capped depths)."""
    real = {"sdxl": SDXL, "sd15": SD15}[arch].unet_config
    cfg = copy.deepcopy(real)
    cfg["model_channels"] = model_channels
    if arch == "sdxl":
        cfg["num_head_channels"] = head_channels
    # SD1.5 keeps its real fixed head count (8): dim_head 4/8/16 at widths 32/64/128
    if depth_override is not None:
        cap = lambda d: min(d, depth_override)
        cfg["transformer_depth"] = [cap(d) for d in cfg["transformer_depth"]]
        cfg["transformer_depth_output"] = [cap(d) for d in cfg["transformer_depth_output"]]
        cfg["transformer_depth_middle"] = cap(cfg["transformer_depth_middle"])
    return cfg
