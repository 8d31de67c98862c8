"""Stand-in of comfy/k_diffusion/sampling.py: the Karras schedule and four samplers on x0 predictions.

``model(x, sigma * s_in, **extra_args)`` returns denoised x0; callbacks receive {"x", "i", "sigma",
"sigma_hat", "denoised"}. euler / heun use no churn (ComfyUI's defaults), euler_ancestral uses eta = 1 and
fresh noise every step from ``default_noise_sampler`` (a torch.Generator seeded with extra_args["seed"], one
draw of the whole batch per step, like real), dpmpp_2m is the 2nd-order multistep DPM-Solver++, dpmpp_2m_sde
(and its _gpu twin) the SDE variant (midpoint, eta = 1) with Brownian-tree noise.

``BrownianTreeNoiseSampler`` keeps what the real one (torchsde.BrownianTree) promises and the pack relies on:
the noise between two sigmas is a fixed function of the seed, the tree's [sigma_min, sigma_max] and the two
sigmas, whatever was drawn before, and a different seed gives different noise. Its values are not the real ones
(no torchsde here), so plain runs with it are not pinned against the real host.
"""
from __future__ import annotations

import torch


def append_zero(x):
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0, device="cpu"):
    ramp = torch.linspace(0, 1, n, device=device)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho).to(device)


def to_d(x, sigma, denoised):
    """dx/dsigma of the probability-flow ODE given the x0 prediction."""
    sigma = torch.as_tensor(sigma)
    return (x - denoised) / sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def default_noise_sampler(x, seed=None):
    gen = None
    if seed is not None:
        gen = torch.Generator(device=x.device)
        gen.manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=gen)


class BrownianTreeNoiseSampler:
    def __init__(self, x, sigma_min, sigma_max, seed=None, transform=lambda x: x, cpu=False):
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        self.seed = int(torch.randint(0, 2 ** 62, ())) if seed is None else int(seed)
        self.interval = (round(float(transform(torch.as_tensor(sigma_min))), 6),
                         round(float(transform(torch.as_tensor(sigma_max))), 6))
        self.transform = transform

    def __call__(self, sigma, sigma_next):
        t0 = round(float(self.transform(torch.as_tensor(sigma))), 6)
        t1 = round(float(self.transform(torch.as_tensor(sigma_next))), 6)
        key = hash((self.seed, self.interval, t0, t1)) % (2 ** 63)  # numbers hash the same in every process
        gen = torch.Generator().manual_seed(key)
        return torch.randn(self.shape, generator=gen).to(device=self.device, dtype=self.dtype)


def _cb(callback, x, i, sigma, sigma_hat, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _cb(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None):
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x, seed=extra_args.get("seed", None))
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _cb(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised
        else:
            d = (x - denoised) / sigmas[i]
            x = x + d * (sigma_down - sigmas[i]) + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None):
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = (x - denoised) / sigmas[i]
        _cb(callback, x, i, sigmas[i], sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt  # last step: plain Euler
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
            d_2 = (x_2 - denoised_2) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    t_of = lambda s: s.log().neg()   # t = -log(sigma)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _cb(callback, x, i, sigmas[i], sigmas[i], denoised)
        t, t_next = t_of(sigmas[i]), t_of(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            d = denoised  # first and last step: first order
        else:
            r = (t - t_of(sigmas[i - 1])) / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        # ratio sigma_next / sigma computed as exp(-t_next) / exp(-t) (bitwise like real); sigma_next = 0 -> 0
        x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None, solver_type="midpoint"):
    """DPM-Solver++(2M) SDE for eps models (lambda = -log sigma), midpoint correction."""
    extra_args = extra_args or {}
    if len(sigmas) <= 1:
        return x
    positive = sigmas[sigmas > 0]
    noise_sampler = noise_sampler or BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(),
                                                              seed=extra_args.get("seed", None), cpu=True)
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _cb(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = lam_t - lam_s
        decay = (-h * (eta + 1)).expm1().neg()
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + sigmas[i + 1] * lam_t.exp() * decay * denoised
        if old_denoised is not None:
            x = x + 0.5 * sigmas[i + 1] * lam_t.exp() * decay * (h / h_last) * (denoised - old_denoised)
        if eta > 0 and s_noise > 0:
            scale = sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * scale
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                            noise_sampler=None, solver_type="midpoint"):
    extra_args = extra_args or {}
    if len(sigmas) <= 1:
        return x
    positive = sigmas[sigmas > 0]
    noise_sampler = noise_sampler or BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(),
                                                              seed=extra_args.get("seed", None), cpu=False)
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, eta=eta,
                               s_noise=s_noise, noise_sampler=noise_sampler, solver_type=solver_type)
