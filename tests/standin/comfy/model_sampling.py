"""Stand-in of comfy/model_sampling.py: ModelSamplingDiscrete + EPS, i.e. SD1.5/SDXL eps-prediction.

Schedule as real: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2 (float64), sigmas = sqrt((1-acp)/acp)
stored as float32; sigma(t) interpolates log-sigma linearly; timestep(sigma) is the nearest index in
log-sigma; percent_to_sigma uses the real convention (<=0 -> 999999999.9, >=1 -> 0.0, else
sigma((1 - percent) * 999)). Also ModelSamplingContinuousEDM (log-linear sigmas between sigma_min and
sigma_max, timestep = log(sigma)/4, percent_to_sigma log-linear), what the ModelSamplingContinuousEDM node puts
on a model (host: comfy_extras/nodes_model_advanced.py). Only EPS prediction is provided (no v-prediction, EDM
prediction, flow or zsnr).
"""
from __future__ import annotations

import math

import torch


def _sigma_view(sigma, ndim):
    # one sigma -> a scalar; a batch of sigmas -> (B, 1, 1, ...) for broadcasting
    return sigma.view(()) if sigma.nelement() == 1 else sigma.view(sigma.shape[:1] + (1,) * (ndim - 1))


class EPS:
    def calculate_input(self, sigma, noise):
        s = _sigma_view(sigma, noise.ndim)
        return noise / (s ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - model_output * _sigma_view(sigma, model_output.ndim)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        s = _sigma_view(sigma, noise.ndim)
        noise = noise * torch.sqrt(1.0 + s ** 2.0) if max_denoise else noise * s
        return noise + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class ModelSamplingDiscrete(torch.nn.Module):
    def __init__(self, model_config=None, zsnr=None):
        super().__init__()
        settings = getattr(model_config, "sampling_settings", {}) if model_config is not None else {}
        start = settings.get("linear_start", 0.00085)
        end = settings.get("linear_end", 0.012)
        n = settings.get("timesteps", 1000)
        betas = torch.linspace(start ** 0.5, end ** 0.5, n, dtype=torch.float64) ** 2
        acp = torch.cumprod(1.0 - betas, dim=0)
        self.num_timesteps = n
        self.linear_start, self.linear_end, self.zsnr = start, end, False
        self.set_sigmas(((1 - acp) / acp) ** 0.5)
        self.sigma_data = 1.0

    def set_sigmas(self, sigmas):
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        d = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return d.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep):
        t = timestep.float().to(self.log_sigmas.device).clamp(0, len(self.sigmas) - 1)
        lo, hi, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp().to(timestep.device)

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()


class ModelSamplingDiscreteEPS(ModelSamplingDiscrete, EPS):
    """What real ``model_base.model_sampling(config, ModelType.EPS)`` builds (a dynamic class there)."""


class ModelSamplingContinuousEDM(torch.nn.Module):
    def __init__(self, model_config=None):
        super().__init__()
        settings = getattr(model_config, "sampling_settings", {}) if model_config is not None else {}
        self.set_parameters(settings.get("sigma_min", 0.002), settings.get("sigma_max", 120.0),
                            settings.get("sigma_data", 1.0))

    def set_parameters(self, sigma_min, sigma_max, sigma_data):
        self.sigma_data = sigma_data
        sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000).exp()
        self.register_buffer("sigmas", sigmas)
        self.register_buffer("log_sigmas", sigmas.log())

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        return 0.25 * sigma.log()

    def sigma(self, timestep):
        return (timestep / 0.25).exp()

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        log_min = math.log(self.sigma_min)
        return math.exp((math.log(self.sigma_max) - log_min) * (1.0 - percent) + log_min)


class ModelSamplingContinuousEDMEPS(ModelSamplingContinuousEDM, EPS):
    """The ModelSamplingContinuousEDM node with sampling "eps" (a dynamic class there)."""
