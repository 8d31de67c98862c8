"""Stand-in of comfy/model_base.py: BaseModel (SD1.5), SDXL (adm ``y`` from pooled_output + size embeddings),
and Flux (a non-UNet diffusion model, only for "is this a UNet" checks).

``apply_model`` runs the APPLY_MODEL wrappers (class_obj = the BaseModel, args ``(x, t, c_concat, c_crossattn,
control, transformer_options, **kwargs)``) and then the diffusion model, whose forward runs the
DIFFUSION_MODEL wrappers -- the real order and arguments. Model outputs go through model_sampling
(EPS: denoised = x - eps * sigma), so everything above apply_model sees x0, like real.
``extra_conds`` builds the same model_conds keys as real (c_crossattn, y for SDXL, c_concat for concat
models). ``process_latent_in/out`` apply the real latent scale factors.
Simplified: only ModelType.EPS sampling exists (Flux too -- its real sampling is flow/CONST), no inpaint
(concat) models, no unCLIP, no weight casting/manual_cast, no hooks.
"""
from __future__ import annotations

import math
from enum import Enum

import torch

import comfy.conds
import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension
from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep, UNetModel


class ModelType(Enum):
    EPS = 1
    V_PREDICTION = 2
    V_PREDICTION_EDM = 3
    STABLE_CASCADE = 4
    EDM = 5
    FLOW = 6
    V_PREDICTION_CONTINUOUS = 7
    FLUX = 8
    IMG_TO_IMG = 9
    FLOW_COSMOS = 10


def model_sampling(model_config, model_type):
    # real builds class ModelSampling(<schedule>, <prediction>); the stand-in only has discrete EPS
    return comfy.model_sampling.ModelSamplingDiscreteEPS(model_config)


def _to(extra, dtype, device):
    if hasattr(extra, "dtype"):
        if extra.dtype in (torch.int, torch.long):
            return extra.to(device)
        return comfy.model_management.cast_to_device(extra, device, dtype)
    return extra


class BaseModel(torch.nn.Module):
    def __init__(self, model_config, model_type=ModelType.EPS, device=None, unet_model=UNetModel):
        super().__init__()
        unet_config = model_config.unet_config
        self.latent_format = model_config.latent_format
        self.model_config = model_config
        self.manual_cast_dtype = model_config.manual_cast_dtype
        self.device = device
        self.current_patcher = None
        self.diffusion_model = unet_model(**unet_config, device=device)
        self.model_type = model_type
        self.model_sampling = model_sampling(model_config, model_type)
        self.adm_channels = unet_config.get("adm_in_channels", None) or 0
        self.concat_keys = ()
        self.memory_usage_factor = model_config.memory_usage_factor
        self.memory_usage_factor_conds = ()

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._apply_model, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, transformer_options),
        ).execute(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat.to(xc)], dim=1)
        dtype = self.manual_cast_dtype or self.get_dtype()
        xc = xc.to(dtype)
        t = self.model_sampling.timestep(t).float()
        context = None if c_crossattn is None else c_crossattn.to(device=xc.device, dtype=dtype)
        extra = {}
        for k, v in kwargs.items():
            extra[k] = [_to(e, dtype, xc.device) for e in v] if isinstance(v, list) else _to(v, dtype, xc.device)
        t = self.process_timestep(t, x=x, **extra)
        out = self.diffusion_model(xc, t, context=context, control=control, transformer_options=transformer_options, **extra).float()
        return self.model_sampling.calculate_denoised(sigma, out, x)

    def process_timestep(self, timestep, **kwargs):
        return timestep

    def get_dtype(self):
        return self.diffusion_model.dtype

    def encode_adm(self, **kwargs):
        return None

    def concat_cond(self, **kwargs):
        return None

    def extra_conds(self, **kwargs):
        out = {}
        cc = self.concat_cond(**kwargs)
        if cc is not None:
            out["c_concat"] = comfy.conds.CONDNoiseShape(cc)
        adm = self.encode_adm(**kwargs)
        if adm is not None:
            out["y"] = comfy.conds.CONDRegular(adm)
        cross_attn = kwargs.get("cross_attn", None)
        if cross_attn is not None:
            out["c_crossattn"] = comfy.conds.CONDCrossAttn(cross_attn)
        return out

    def extra_conds_shapes(self, **kwargs):
        return {}

    def process_latent_in(self, latent):
        return self.latent_format.process_in(latent)

    def process_latent_out(self, latent):
        return self.latent_format.process_out(latent)

    def scale_latent_inpaint(self, sigma, noise, latent_image, **kwargs):
        return self.model_sampling.noise_scaling(sigma.reshape([sigma.shape[0]] + [1] * (len(noise.shape) - 1)),
                                                 noise, latent_image)

    def memory_required(self, input_shape, cond_shapes={}):
        # real formula for the non-flash-attention path: batch * spatial area * 0.15 MB * memory_usage_factor
        area = input_shape[0] * math.prod(input_shape[2:])
        return (area * 0.15 * self.memory_usage_factor) * (1024 * 1024)


class SDXL(BaseModel):
    def __init__(self, model_config, model_type=ModelType.EPS, device=None):
        super().__init__(model_config, model_type, device=device)
        self.embedder = Timestep(256)

    def encode_adm(self, **kwargs):
        # real layout: pooled text embedding (1280) + 6 x 256 sinusoidal size/crop/target embeddings = 2816
        pooled = kwargs["pooled_output"]
        width = kwargs.get("width", 768)
        height = kwargs.get("height", 768)
        vals = [height, width, kwargs.get("crop_h", 0), kwargs.get("crop_w", 0),
                kwargs.get("target_height", height), kwargs.get("target_width", width)]
        flat = torch.cat([self.embedder(torch.Tensor([v])) for v in vals]).flatten().unsqueeze(0)
        return torch.cat((pooled.to(flat.device), flat.repeat(pooled.shape[0], 1)), dim=1)


class Flux(BaseModel):
    def __init__(self, model_config, model_type=ModelType.FLUX, device=None):
        import comfy.ldm.flux.model
        super().__init__(model_config, model_type, device=device, unet_model=comfy.ldm.flux.model.Flux)
