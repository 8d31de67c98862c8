"""A from-scratch stand-in of how ComfyUI_IPAdapter_plus patches a model (host.md section 7).

Written from the behaviour of IPAdapter_plus (CrossAttentionPatch.py ``Attn2Replace`` / ``ipadapter_attention``
and IPAdapterPlus.py ``ipadapter_execute`` / ``set_model_patch_replace``); no code is taken from it (GPL-3.0).
It works on the stand-in host and on a real ComfyUI (``optimized_attention`` is imported lazily from whichever
``comfy`` package is loaded).

What is reproduced:
* one ``Attn2Replace`` per attn2 key, registered in IPAdapter_plus's order and with its ``module_key`` numbering
  ("1", "3", "5", ... = 2 * layer + 1); SDXL keys are 3-tuples ("input", 4|5|7|8, i), ("output", 0..5, i) and
  ("middle", 1, i) for the real depths (2 or 10), SD1.5 keys are 2-tuples ("input", 1|2|4|5|7|8),
  ("output", 3..11), ("middle", 1). The middle block is registered under id 1 exactly like IPAdapter_plus,
  so ComfyUI (which calls it ("middle", 0)) never runs it;
* a slot that already holds an object gets ``.add(callback, **kwargs)`` (a plain function there raises
  AttributeError, as with the real node); ``Attn2Replace.to()`` returns self;
* ``Attn2Replace.__call__``: text attention, then ``out = out + callback(out, q, k, v, extra_options, **kw)`` for
  every stacked callback whose window contains ``extra_options["sigmas"][0]`` (sigma_end <= sigma <= sigma_start);
* ``ipadapter_attention``: the weight-type maps (a ``{transformer_index: w}`` dict -> integer 0 outside it), the
  "precise" cond/uncond swaps, per-chunk token choice from ``cond_or_uncond`` (0 -> cond, 1 -> uncond, 2 only
  with exactly three chunks -- otherwise IndexError, a real hazard), ``batch_prompt = b // len(cond_or_uncond)``,
  per-batch weight tensors, the embeds-scaling modes, and the attention mask resized to the token grid derived
  from ``original_shape``; the returned term is already multiplied by weight and mask.
Simplified: the adapter is random and tiny -- image tokens are ``token_dim`` (64) wide instead of the model's
context width (the tokens only ever meet the adapter's own to_k_ip/to_v_ip), the projector is an
ImageProjModel-like Linear + LayerNorm on ``clip_dim`` features (LayerNorm bias random, so the uncond tokens --
the projector applied to zero features -- are non-zero); no CLIP vision, FaceID, AnimateDiff ``ad_params``,
multi-GPU clones, or Kolors.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_TYPES = ["linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input", "weak output",
                "weak middle", "strong middle", "style transfer", "composition", "strong style transfer",
                "style and composition", "style transfer precise", "composition precise",
                "strong style and composition"]


def _attention(q, k, v, heads):
    from comfy.ldm.modules.attention import optimized_attention  # lazy: works with the real or the stand-in comfy
    return optimized_attention(q, k, v, heads)


def _fit_batch(t, n):
    """Cut to n rows, or pad by repeating the last row (IPAdapter_plus's tensor_to_size)."""
    if t.shape[0] > n:
        return t[:n]
    if t.shape[0] < n:
        return torch.cat([t, t[-1:].repeat([n - t.shape[0]] + [1] * (t.ndim - 1))], dim=0)
    return t


# ---------------------------------------------------------------------------------------------------------------
# the adapter
# ---------------------------------------------------------------------------------------------------------------
class _ToKV(nn.Module):
    def __init__(self):
        super().__init__()
        self.to_kvs = nn.ModuleDict()


class TinyIPAdapter(nn.Module):
    """Projector (clip features -> image tokens) and per-layer to_k_ip / to_v_ip, keyed "<n>_to_k_ip"."""

    def __init__(self, layer_widths: dict, clip_dim=32, tokens=4, token_dim=64, seed=0):
        super().__init__()
        self.tokens, self.token_dim = tokens, token_dim
        self.proj = nn.Linear(clip_dim, tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim)
        self.ip_layers = _ToKV()
        for module_key, width in layer_widths.items():
            self.ip_layers.to_kvs[f"{module_key}_to_k_ip"] = nn.Linear(token_dim, width, bias=False)
            self.ip_layers.to_kvs[f"{module_key}_to_v_ip"] = nn.Linear(token_dim, width, bias=False)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
                elif name.startswith("norm.weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.5 * torch.randn(p.shape, generator=g))

    def image_proj_model(self, embeds):
        return self.norm(self.proj(embeds).reshape(-1, self.tokens, self.token_dim))

    def get_image_embeds(self, clip_embed, clip_embed_zeroed):
        return self.image_proj_model(clip_embed), self.image_proj_model(clip_embed_zeroed)

    # IPAdapter_plus's Attn2Replace / callback call these (multi-GPU support); one device here
    def get_multigpu_clone(self, device):
        return self

    def create_multigpu_clone(self, device):
        pass


def _transformer_width(diffusion_model, block_name, block_id):
    blocks = {"input": diffusion_model.input_blocks, "output": diffusion_model.output_blocks}
    module = diffusion_model.middle_block if block_name == "middle" else blocks[block_name][block_id]
    for layer in module:
        if hasattr(layer, "transformer_blocks"):
            return layer.transformer_blocks[0].attn2.to_k.out_features
    raise ValueError(f"no SpatialTransformer in {block_name} block {block_id}")


def _context_dim(diffusion_model):
    for m in diffusion_model.modules():
        if hasattr(m, "transformer_blocks"):
            return m.transformer_blocks[0].attn2.to_k.in_features
    raise ValueError("not a UNet with cross-attention")


def patch_keys(is_sdxl: bool):
    """[(module_key, attn2 key, (block_name, block_id) for the width)] in IPAdapter_plus's registration order."""
    keys = []

    def add(key, where):
        keys.append((str(len(keys) * 2 + 1), key, where))

    if is_sdxl:
        for bid in (4, 5, 7, 8):
            for i in range(2 if bid in (4, 5) else 10):
                add(("input", bid, i), ("input", bid))
        for bid in range(6):
            for i in range(2 if bid in (3, 4, 5) else 10):
                add(("output", bid, i), ("output", bid))
        for i in range(10):
            add(("middle", 1, i), ("middle", 0))  # id 1: never called by ComfyUI (IPAdapter_plus issue #810)
    else:
        for bid in (1, 2, 4, 5, 7, 8):
            add(("input", bid), ("input", bid))
        for bid in range(3, 12):
            add(("output", bid), ("output", bid))
        add(("middle", 1), ("middle", 0))
    return keys


def make_ipadapter(model_patcher, seed=0, clip_dim=32, tokens=4, token_dim=64) -> TinyIPAdapter:
    """A random adapter whose per-layer projections fit ``model_patcher``'s UNet (SDXL detected by context 2048).
    Built outside inference mode with frozen parameters, so it is usable in and out of ``torch.inference_mode``."""
    dm = model_patcher.model.diffusion_model
    is_sdxl = _context_dim(dm) == 2048
    widths = {mk: _transformer_width(dm, *where) for mk, _, where in patch_keys(is_sdxl)}
    with torch.inference_mode(False):
        ipa = TinyIPAdapter(widths, clip_dim=clip_dim, tokens=tokens, token_dim=token_dim, seed=seed)
    ipa.requires_grad_(False)
    ipa.is_sdxl = is_sdxl
    return ipa


ADAPTER_SEED = 4242
_ADAPTERS: dict = {}


def random_ipadapter(model_patcher, seed=ADAPTER_SEED) -> TinyIPAdapter:
    """The cached random adapter for this UNet layout (same weights for every model of one architecture)."""
    dm = model_patcher.model.diffusion_model
    is_sdxl = _context_dim(dm) == 2048
    layout = tuple(_transformer_width(dm, *where) for _, _, where in patch_keys(is_sdxl))
    key = (is_sdxl, layout, seed)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = make_ipadapter(model_patcher, seed=seed)
    return _ADAPTERS[key]


def image_tokens(ipadapter, seed=0, negative_image=False):
    """(cond, uncond) image tokens: the projector on random "CLIP features" drawn from ``seed``; the uncond side is
    a second random feature vector (a negative image) or zero features (IPAdapter_plus's default uncond for base
    models -- non-zero tokens after the projector)."""
    with torch.inference_mode(False), torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        clip_dim = ipadapter.proj.in_features
        style = torch.randn(1, clip_dim, generator=g)
        negative = torch.randn(1, clip_dim, generator=g) if negative_image else torch.zeros(1, clip_dim)
        return ipadapter.get_image_embeds(style, negative)


# ---------------------------------------------------------------------------------------------------------------
# the patch object and its callback
# ---------------------------------------------------------------------------------------------------------------
class Attn2Replace:
    def __init__(self, callback=None, **kwargs):
        self.callback = [callback]
        self.kwargs = [kwargs]

    def add(self, callback, **kwargs):
        self.callback.append(callback)
        self.kwargs.append(kwargs)
        for key, value in kwargs.items():  # IPAdapter_plus also mirrors the latest kwargs as attributes
            setattr(self, key, value)

    def __call__(self, q, k, v, extra_options):
        dtype = q.dtype
        out = _attention(q, k, v, extra_options["n_heads"])
        sigma = extra_options["sigmas"].detach().cpu()[0].item() if "sigmas" in extra_options else 999999999.9
        for callback, kw in zip(self.callback, self.kwargs):
            if kw["sigma_end"] <= sigma <= kw["sigma_start"]:
                out = out + callback(out, q, k, v, extra_options, **kw)
        return out.to(dtype=dtype)

    def to(self, device, *args, **kwargs):
        return self  # the object stays in its slot when ComfyUI loads the model


def ipadapter_attention(out, q, k, v, extra_options, module_key="", ipadapter=None, weight=1.0, cond=None,
                        cond_alt=None, uncond=None, weight_type="linear", mask=None, sigma_start=0.0, sigma_end=1.0,
                        unfold_batch=False, embeds_scaling="V only", **kwargs):
    """The IP term (already times weight and mask) for this layer, or the integer 0."""
    ipadapter = ipadapter.get_multigpu_clone(q.device)
    dtype = q.dtype
    cond_or_uncond = extra_options["cond_or_uncond"]
    block_type = extra_options["block"][0]
    t_idx = extra_options["transformer_index"]
    to_kvs = ipadapter.ip_layers.to_kvs
    layers = 11 if "101_to_k_ip" in to_kvs else 16
    b, seq_len = q.shape[0], q.shape[1]
    batch_prompt = b // len(cond_or_uncond)
    _, _, oh, ow = extra_options["original_shape"]

    # --- per-layer weight ---------------------------------------------------------------------------------
    ramp = {"ease in": lambda: 0.05 + 0.95 * (1 - t_idx / layers),
            "ease out": lambda: 0.05 + 0.95 * (t_idx / layers),
            "ease in-out": lambda: 0.05 + 0.95 * (1 - abs(t_idx - layers / 2) / (layers / 2)),
            "reverse in-out": lambda: 0.05 + 0.95 * (abs(t_idx - layers / 2) / (layers / 2))}
    weak = {"weak input": ("input",), "weak middle": ("middle",), "weak output": ("output",),
            "strong middle": ("input", "output")}
    if weight_type in ramp:
        weight = weight * ramp[weight_type]()
    elif weight_type in weak and block_type in weak[weight_type]:
        weight = weight * 0.2
    elif isinstance(weight, dict):
        if t_idx not in weight:
            return 0
        # "precise" types feed the style tokens to the uncond branch (and zeros to cond) in the listed layers
        composition_layers = (3,) if layers == 11 else (4, 5)
        if weight_type == "style transfer precise" and t_idx in composition_layers:
            uncond, cond = cond, cond * 0
        elif weight_type == "composition precise" and t_idx not in composition_layers:
            uncond, cond = cond, cond * 0
        weight = weight[t_idx]
        if cond_alt is not None and t_idx in cond_alt:
            cond = cond_alt[t_idx]

    if isinstance(weight, torch.Tensor):
        weight = _fit_batch(weight, batch_prompt)
        if torch.all(weight == 0):
            return 0
        weight = weight.repeat(len(cond_or_uncond), 1, 1)  # (rows, 1, 1), same per-batch weight in every chunk
    elif weight == 0:
        return 0

    # --- image keys/values per chunk ----------------------------------------------------------------------
    proj_k, proj_v = to_kvs[module_key + "_to_k_ip"], to_kvs[module_key + "_to_v_ip"]
    if unfold_batch:  # one image per latent row
        cond, uncond = _fit_batch(cond, batch_prompt), _fit_batch(uncond, batch_prompt)
        k_c, k_u, v_c, v_u = proj_k(cond), proj_k(uncond), proj_v(cond), proj_v(uncond)
    else:  # the same tokens for every row of a chunk
        rep = lambda t: t.repeat(batch_prompt, 1, 1)
        k_c, k_u, v_c, v_u = rep(proj_k(cond)), rep(proj_k(uncond)), rep(proj_v(cond)), rep(proj_v(uncond))
    # index 2 (a third cond list entry, e.g. CosXL) exists only when there are exactly 3 chunks
    ks, vs = ((k_c, k_u, k_c), (v_c, v_u, v_c)) if len(cond_or_uncond) == 3 else ((k_c, k_u), (v_c, v_u))
    ip_k = torch.cat([ks[i] for i in cond_or_uncond], dim=0)
    ip_v = torch.cat([vs[i] for i in cond_or_uncond], dim=0)

    heads = extra_options["n_heads"]
    if embeds_scaling in ("K+mean(V) w/ C penalty", "K+V w/ C penalty"):
        weight = weight * (float(ip_k.shape[2]) / 1280.0)
    if embeds_scaling == "K+mean(V) w/ C penalty":
        mean_v = ip_v.mean(dim=1, keepdim=True)
        out_ip = _attention(q, ip_k * weight, (ip_v - mean_v) + mean_v * weight, heads)
    elif embeds_scaling in ("K+V", "K+V w/ C penalty"):
        out_ip = _attention(q, ip_k * weight, ip_v * weight, heads)
    else:  # "V only"
        out_ip = _attention(q, ip_k, ip_v, heads) * weight

    # --- attention mask on the token grid -----------------------------------------------------------------
    if mask is not None:
        mh = oh / math.sqrt(oh * ow / seq_len)
        mh = int(mh) + int(seq_len % int(mh) != 0)
        mw = seq_len // mh
        m = F.interpolate(mask.unsqueeze(1), size=(mh, mw), mode="bilinear").squeeze(1)
        m = _fit_batch(m, batch_prompt).repeat(len(cond_or_uncond), 1, 1)
        m = m.view(m.shape[0], -1, 1).repeat(1, 1, out.shape[2])
        n = mh * mw
        if n < seq_len:  # extreme aspect ratios: pad / centre-crop to the token count
            pad = seq_len - n
            m = F.pad(m, (0, 0, pad // 2, pad - pad // 2), value=0.0)
        elif n > seq_len:
            start = (n - seq_len) // 2
            m = m[:, start:start + seq_len, :]
        out_ip = out_ip * m

    return out_ip.to(dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# the apply step (IPAdapterAdvanced -> ipadapter_execute)
# ---------------------------------------------------------------------------------------------------------------
def weight_map(weight_type: str, weight: float, is_sdxl: bool, weight_composition=1.0, style_boost=None,
               composition_boost=None):
    """IPAdapter_plus's per-weight-type ``{transformer_index: w}`` maps (or the float for the other types)."""
    w = weight
    wc = weight_composition
    sd15_style = [0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15]
    if weight_type == "style transfer":
        return {6: w} if is_sdxl else {i: w for i in sd15_style}
    if weight_type == "composition":
        return {3: w} if is_sdxl else {4: w * 0.25, 5: w}
    if weight_type == "strong style transfer":
        idx = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10] if is_sdxl else [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        return {i: w for i in idx}
    if weight_type in ("style and composition", "style transfer precise"):
        if weight_type == "style transfer precise":
            wc = style_boost if style_boost is not None else w
        if is_sdxl:
            return {3: wc, 6: w}
        return {**{i: w for i in sd15_style}, 4: wc * 0.25, 5: wc}
    if weight_type == "strong style and composition":
        if is_sdxl:
            return {**{i: w for i in range(11)}, 3: wc}
        return {**{i: w for i in range(16)}, 4: wc, 5: wc}
    if weight_type == "composition precise":
        wc, w = w, (composition_boost if composition_boost is not None else w)
        if is_sdxl:
            return {**{i: w * 0.1 for i in range(11)}, 3: wc, 6: w}
        return {**{i: w for i in range(16)}, 4: wc * 0.25, 5: wc, 6: w * 0.1, 7: w * 0.1, 8: w * 0.1}
    return weight


def _set_patch(model, patch_kwargs, key):
    # copy-on-write of transformer_options down to the attn2 dict; an occupied slot is extended with .add
    to = model.model_options["transformer_options"].copy()
    to["patches_replace"] = dict(to.get("patches_replace", {}))
    to["patches_replace"]["attn2"] = dict(to["patches_replace"].get("attn2", {}))
    if key not in to["patches_replace"]["attn2"]:
        to["patches_replace"]["attn2"][key] = Attn2Replace(ipadapter_attention, **patch_kwargs)
        model.model_options["transformer_options"] = to
    else:
        to["patches_replace"]["attn2"][key].add(ipadapter_attention, **patch_kwargs)


def apply_ipadapter(model_patcher, ipadapter=None, cond=None, uncond=None, weight=1.0, weight_type="linear",
                    start_at=0.0, end_at=1.0, mask=None, unfold_batch=False, embeds_scaling="V only", cond_alt=None,
                    weight_composition=1.0, style_boost=None, composition_boost=None, *, arch=None,
                    negative_image=False, seed=0):
    """Clone ``model_patcher`` and register the adapter in every attn2 slot, like IPAdapterAdvanced does.

    Host form (``ipadapter`` omitted): the cached random adapter of this architecture and ``image_tokens(seed,
    negative_image)``; ``arch`` ("sdxl"/"sd15"), when given, must match the model. ``mask``: (H, W) or (B, H, W).
    """
    if ipadapter is None:
        ipadapter = random_ipadapter(model_patcher)
        if cond is None:
            cond, uncond = image_tokens(ipadapter, seed=seed, negative_image=negative_image)
    if arch is not None and (arch == "sdxl") != bool(getattr(ipadapter, "is_sdxl", arch == "sdxl")):
        raise ValueError(f"arch={arch!r} does not match the model's cross-attention width")
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.float32)
    model = model_patcher.clone()
    if isinstance(weight, (list, tuple)):  # batch weights: a per-row tensor only with unfold_batch
        weight = torch.tensor(weight).unsqueeze(-1).unsqueeze(-1) if unfold_batch else weight[0]
    if style_boost is not None:
        weight_type = "style transfer precise"
    elif composition_boost is not None:
        weight_type = "composition precise"
    is_sdxl = getattr(ipadapter, "is_sdxl", None)
    if is_sdxl is None:
        is_sdxl = _context_dim(model.model.diffusion_model) == 2048
    weight = weight_map(weight_type, weight, is_sdxl, weight_composition, style_boost, composition_boost)
    ms = model.get_model_object("model_sampling")
    if mask is not None and mask.ndim == 2:
        mask = mask.unsqueeze(0)
    patch_kwargs = {"ipadapter": ipadapter, "weight": weight, "cond": cond, "cond_alt": cond_alt, "uncond": uncond,
                    "weight_type": weight_type, "mask": mask, "sigma_start": ms.percent_to_sigma(start_at),
                    "sigma_end": ms.percent_to_sigma(end_at), "unfold_batch": unfold_batch,
                    "embeds_scaling": embeds_scaling}
    for module_key, key, _ in patch_keys(is_sdxl):
        patch_kwargs["module_key"] = module_key
        _set_patch(model, patch_kwargs, key)
    return model
