"""Tiny (and one full-size) random-weight models for the real-ComfyUI host tier and the GPU benchmark.

Everything here builds *real* ComfyUI objects (``comfy.supported_models`` configs, ``comfy.model_base`` models,
``comfy.model_patcher.ModelPatcher``) and therefore needs an initialised ComfyUI on ``sys.path``: see
``tests/hosts/comfyui_host.py`` (``ComfyUIHost`` does the set-up; the benchmark can call
``comfyui_host.setup_comfyui()`` and then these helpers). ``comfy`` is only imported inside the functions.

Block layout (checked against ComfyUI v0.3.64, see tests/test_host_tier.py::test_tiny_*_layout):

* SDXL. Real config (``comfy/model_detection.py``): ``num_res_blocks [2, 2, 2]``, ``channel_mult [1, 2, 4]``,
  ``transformer_depth [0, 0, 2, 2, 10, 10]`` (one entry per input res-block: input blocks 1,2 / 4,5 / 7,8),
  ``transformer_depth_middle 10``, ``transformer_depth_output [0, 0, 0, 2, 2, 2, 10, 10, 10]`` (popped from the
  end: output blocks 0,1,2 get 10, 3,4,5 get 2, 6,7,8 none). Every non-zero entry makes one SpatialTransformer,
  so the 11 SpatialTransformers, their block ids and their ``transformer_index`` (input 4,5,7,8 = 0..3,
  middle 0 = 4, output 0..5 = 5..10) depend only on *which* entries are non-zero, never on their value. The
  tiny model therefore keeps ``num_res_blocks``/``channel_mult``/the zero pattern and only lowers each depth to
  ``min(depth, real)`` (default 1: block_index 0 only), ``model_channels`` (default 32) and
  ``num_head_channels`` (32). context_dim 2048, adm_in_channels 2816, linear transformer in/out: unchanged.
* SD1.5. Real config: ``num_res_blocks [2, 2, 2, 2]``, ``channel_mult [1, 2, 4, 4]``,
  ``transformer_depth [1, 1, 1, 1, 1, 1, 0, 0]``, middle 1, ``transformer_depth_output [1]*9 + [0, 0, 0]``,
  8 heads, context_dim 768, conv proj_in/out. Already depth 1 everywhere: only ``model_channels`` shrinks.
  16 SpatialTransformers: input 1,2,4,5,7,8 (0..5), middle 0 (6), output 3..11 (7..15).

Weights: ``comfy.ops`` layers skip ``reset_parameters`` (they are ``torch.empty``), so every parameter is filled
here from a fixed seed: Linear/Conv weights ~ N(0, 1/fan_in), biases 0, norm weights 1 / biases 0.

IP-Adapter files: the standard ``ip-adapter_*.safetensors`` layout that ComfyUI_IPAdapter_plus loads:
``image_proj.*`` (base: ``proj`` + ``norm`` = ImageProjModel with 4 tokens; plus: Resampler with 16 latents) and
``ip_adapter.{2n+1}.to_k_ip.weight / to_v_ip.weight`` of shape (layer width, context_dim) for the n-th
cross-attention layer in IPAdapter_plus's own numbering (SDXL: input 4,5 (2 each), input 7,8 (10 each),
output 0,1,2 (10 each), output 3,4,5 (2 each), middle (10) = 70 layers; SD1.5: input 1,2,4,5,7,8, output 3..11,
middle = 16 layers). All layers of the *real* architecture are written, even those a depth-reduced tiny model
does not have (IPAdapter_plus tells SDXL from SD1.5 by ``1.to_k_ip`` having 2048 inputs and counts layers,
11 vs 16 transformers, by the presence of ``101_to_k_ip``); with ``depth=`` those get a width-1 placeholder.
IPAdapter_plus registers the middle block as id 1, which ComfyUI never calls (middle id is 0).
"""
from __future__ import annotations

import math
import os
from typing import Any

import torch

SDXL_CONTEXT_DIM = 2048
SD15_CONTEXT_DIM = 768
SDXL_POOLED_DIM = 1280
SDXL_ADM = 2816

# (block, id, real depth, channel multiplier) in the order IPAdapter_plus numbers its layers
_IPA_LAYOUT = {
    "sdxl": ([("input", 4, 2, 2), ("input", 5, 2, 2), ("input", 7, 10, 4), ("input", 8, 10, 4)]
             + [("output", i, 10, 4) for i in (0, 1, 2)] + [("output", i, 2, 2) for i in (3, 4, 5)]
             + [("middle", 0, 10, 4)]),
    "sd15": ([("input", 1, 1, 1), ("input", 2, 1, 1), ("input", 4, 1, 2), ("input", 5, 1, 2),
              ("input", 7, 1, 4), ("input", 8, 1, 4)]
             + [("output", i, 1, 4) for i in (3, 4, 5)] + [("output", i, 1, 2) for i in (6, 7, 8)]
             + [("output", i, 1, 1) for i in (9, 10, 11)] + [("middle", 0, 1, 4)]),
}

#: The SpatialTransformers of the real architectures, in transformer_index order: (block, id, real depth)
SPATIAL_TRANSFORMERS = {
    "sdxl": [("input", 4, 2), ("input", 5, 2), ("input", 7, 10), ("input", 8, 10), ("middle", 0, 10)]
            + [("output", i, 10) for i in (0, 1, 2)] + [("output", i, 2) for i in (3, 4, 5)],
    "sd15": [("input", i, 1) for i in (1, 2, 4, 5, 7, 8)] + [("middle", 0, 1)]
            + [("output", i, 1) for i in range(3, 12)],
}


def _arch(arch: str) -> str:
    a = arch.lower().replace(".", "").replace("-", "").replace("_", "")
    if a in ("sdxl", "xl"):
        return "sdxl"
    if a in ("sd15", "sd1", "sd"):
        return "sd15"
    raise ValueError(f"unknown arch {arch!r}: expected 'sdxl' or 'sd15'")


# ---------------------------------------------------------------------------------------------------------
# UNet configs
# ---------------------------------------------------------------------------------------------------------
def sdxl_unet_config(model_channels: int = 32, depth: int | None = 1, num_head_channels: int = 32) -> dict:
    """SDXL's unet_config as ComfyUI's model detection produces it, with ``model_channels``, the per-transformer
    depth (``min(depth, real)``; None = real depths) and ``num_head_channels`` reduced."""
    def d(real: int) -> int:
        return real if depth is None else (min(depth, real) if real else 0)
    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "num_classes": "sequential", "adm_in_channels": SDXL_ADM, "in_channels": 4,
        "model_channels": model_channels, "num_res_blocks": [2, 2, 2],
        "transformer_depth": [d(x) for x in (0, 0, 2, 2, 10, 10)], "channel_mult": [1, 2, 4],
        "transformer_depth_middle": d(10), "use_linear_in_transformer": True, "context_dim": SDXL_CONTEXT_DIM,
        "num_head_channels": num_head_channels,
        "transformer_depth_output": [d(x) for x in (0, 0, 0, 2, 2, 2, 10, 10, 10)],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


def sd15_unet_config(model_channels: int = 32) -> dict:
    """SD1.5's unet_config as ComfyUI's model detection produces it, with ``model_channels`` reduced."""
    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": model_channels,
        "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
        "context_dim": SD15_CONTEXT_DIM, "num_heads": 8,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


# ---------------------------------------------------------------------------------------------------------
# weight initialisation
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def init_weights_(module: torch.nn.Module, seed: int = 0, gain: float = 1.0) -> torch.nn.Module:
    """Fill every parameter of ``module`` deterministically from ``seed`` (comfy.ops layers are left
    uninitialised by ComfyUI). Linear/Conv weights ~ N(0, gain²/fan_in), biases 0; GroupNorm/LayerNorm weight 1,
    bias 0; any other parameter ~ N(0, 0.02²). Draws happen in ``named_parameters`` order on a generator of the
    parameter's device, so the result is identical on every call (for one device type)."""
    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    done = set()
    for m in module.modules():
        if isinstance(m, norm_types):
            if getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
                done.add(id(m.weight))
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
                done.add(id(m.bias))
    gens: dict[Any, torch.Generator] = {}
    for name, p in module.named_parameters():
        if id(p) in done:
            continue
        dev = p.device
        g = gens.get(dev)
        if g is None:
            g = gens[dev] = torch.Generator(device=dev)
            g.manual_seed(seed)
        if name.endswith("bias"):
            p.zero_()
        elif p.dim() >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g, device=dev, dtype=torch.float32).to(p.dtype)
                    * (gain / math.sqrt(fan_in)))
        else:
            p.copy_(torch.randn(p.shape, generator=g, device=dev, dtype=torch.float32).to(p.dtype) * 0.02)
        done.add(id(p))
    for name, b in module.named_buffers():
        if b.is_floating_point() and not torch.isfinite(b).all():
            raise RuntimeError(f"buffer {name} is not finite after construction")
    return module


# ---------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------
def _build(config_cls, unet_config: dict, *, seed: int, dtype, device, extra: dict | None = None):
    import comfy.model_management as mm
    import comfy.model_patcher

    conf = config_cls(unet_config)
    # supported_models.BASE.__init__ overwrites num_heads/num_head_channels with the class's defaults
    for k, v in (extra or {}).items():
        conf.unet_config[k] = v
    conf.set_inference_dtype(dtype, None)
    load_device = mm.get_torch_device() if device is None else torch.device(device)
    model = conf.get_model({}, device=load_device)
    init_weights_(model.diffusion_model, seed=seed)
    model.eval()
    offload = mm.unet_offload_device() if load_device.type != "cpu" else load_device
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload)


def make_tiny_sdxl(model_channels: int = 32, depth: int | None = 1, num_head_channels: int = 32, seed: int = 0,
                   dtype=torch.float32, device: Any = "cpu"):
    """ModelPatcher over a real ``comfy.model_base.SDXL`` with the real block layout (11 SpatialTransformers,
    real block ids and transformer_index), reduced width/depth, random weights from ``seed``."""
    import comfy.supported_models
    cfg = sdxl_unet_config(model_channels, depth, num_head_channels)
    return _build(comfy.supported_models.SDXL, cfg, seed=seed, dtype=dtype, device=device,
                  extra={"num_heads": -1, "num_head_channels": num_head_channels})


def make_tiny_sd15(model_channels: int = 32, seed: int = 0, dtype=torch.float32, device: Any = "cpu"):
    """ModelPatcher over a real ``comfy.model_base.BaseModel`` (SD15 config): 16 SpatialTransformers,
    8 heads, context 768, reduced width, random weights from ``seed``."""
    import comfy.supported_models
    return _build(comfy.supported_models.SD15, sd15_unet_config(model_channels), seed=seed, dtype=dtype,
                  device=device)


def make_full_sdxl(seed: int = 0, dtype=torch.float16, device: Any = None):
    """The REAL SDXL-1024 UNet architecture (model_channels 320, depths 2/10, 64-dim heads, ~2.6 B parameters)
    with random weights, built directly on ``device`` (default: ComfyUI's torch device). GPU benchmark only."""
    import comfy.supported_models
    return _build(comfy.supported_models.SDXL, sdxl_unet_config(320, None, 64), seed=seed, dtype=dtype,
                  device=device, extra={"num_heads": -1, "num_head_channels": 64})


def make_tiny_flux(seed: int = 0, hidden_size: int = 64, dtype=torch.float32, device: Any = "cpu"):
    """ModelPatcher over a real ``comfy.model_base.Flux`` (a DiT, not a UNet): 1 double + 1 single block."""
    import comfy.supported_models
    heads = 2
    cfg = {"image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16, "vec_in_dim": 768,
           "context_in_dim": 4096, "hidden_size": hidden_size, "mlp_ratio": 4.0, "num_heads": heads, "depth": 1,
           "depth_single_blocks": 1, "axes_dim": _flux_axes(hidden_size // heads), "theta": 10000,
           "qkv_bias": True, "guidance_embed": True}
    return _build(comfy.supported_models.Flux, cfg, seed=seed, dtype=dtype, device=device)


def _flux_axes(head_dim: int) -> list[int]:
    a = (head_dim // 8) * 2
    b = (head_dim - a) // 2
    b -= b % 2
    return [head_dim - 2 * b, b, b]


def transformer_layout(model_patcher) -> list[tuple[str, int, int, int]]:
    """(block, id, depth, channels) of every SpatialTransformer of a UNet ModelPatcher, in execution order
    (= transformer_index order)."""
    dm = model_patcher.model.diffusion_model
    from comfy.ldm.modules.attention import SpatialTransformer
    out = []
    for block, blocks in (("input", dm.input_blocks), ("middle", [dm.middle_block]), ("output", dm.output_blocks)):
        for i, b in enumerate(blocks):
            for layer in b:
                if isinstance(layer, SpatialTransformer):
                    out.append((block, i, len(layer.transformer_blocks), layer.in_channels))
    order = {"input": 0, "middle": 1, "output": 2}
    return sorted(out, key=lambda t: (order[t[0]], t[1]))


# ---------------------------------------------------------------------------------------------------------
# IP-Adapter files
# ---------------------------------------------------------------------------------------------------------
def ipadapter_layers(arch: str, model_channels: int, depth: int | None = None) -> list[tuple[str, tuple, int]]:
    """``(module_key, attn2 patch key, width)`` for every cross-attention layer of the real architecture, in
    IPAdapter_plus's numbering (module_key = 2n+1). The patch key is where ComfyUI calls it (middle id 0).
    ``depth``: the depth-reduced model's per-transformer depth; layers with ``block_index >= depth`` do not
    exist in that model and get width 1 (a placeholder: shape-checked loudly if ever called)."""
    arch = _arch(arch)
    out = []
    n = 0
    for block, bid, real_depth, mult in _IPA_LAYOUT[arch]:
        for idx in range(real_depth):
            key = (block, bid, idx) if arch == "sdxl" else (block, bid)
            exists = depth is None or idx < depth
            out.append((str(2 * n + 1), key, model_channels * mult if exists else 1))
            n += 1
    return out


@torch.no_grad()
def random_ipadapter_state_dict(arch: str, model_channels: int = 32, *, depth: int | None = None,
                                plus: bool = False, clip_embeddings_dim: int | None = None, seed: int = 0,
                                dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A random-weight IP-Adapter state dict in the standard single-file layout (see module docstring).

    base (``plus=False``): ImageProjModel ``image_proj.proj`` (4·ctx, clip_dim) + ``image_proj.norm``; the
    clip_embeddings_dim is free (IPAdapter_plus reads it from the embeds; real files: 1024 ViT-H / 1280 ViT-bigG;
    default here 64 to stay small). plus: the Resampler (16 latents, depth 4, dim 1280/heads 20 for SDXL,
    768/12 for SD1.5, as IPAdapter_plus builds it), clip_embeddings_dim default 1280 (SDXL) / 1024 (SD1.5).
    ``depth``: see :func:`ipadapter_layers` (IPAdapter_plus builds an nn.Linear, with its default init, for
    every layer in the file on every apply: placeholders keep that cheap for depth-reduced models)."""
    arch = _arch(arch)
    ctx = SDXL_CONTEXT_DIM if arch == "sdxl" else SD15_CONTEXT_DIM
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=None):
        fan_in = shape[-1] if len(shape) > 1 else 1
        s = std if std is not None else 1.0 / math.sqrt(fan_in)
        return (torch.randn(shape, generator=g) * s).to(dtype)

    sd: dict[str, torch.Tensor] = {}
    if not plus:
        cdim = clip_embeddings_dim or 64
        sd["image_proj.proj.weight"] = rnd(4 * ctx, cdim)
        sd["image_proj.proj.bias"] = torch.zeros(4 * ctx, dtype=dtype)
        sd["image_proj.norm.weight"] = torch.ones(ctx, dtype=dtype)
        sd["image_proj.norm.bias"] = torch.zeros(ctx, dtype=dtype)
    else:
        dim, heads = (1280, 20) if arch == "sdxl" else (ctx, 12)
        inner = 64 * heads
        cdim = clip_embeddings_dim or (1280 if arch == "sdxl" else 1024)
        p = "image_proj."
        sd[p + "latents"] = rnd(1, 16, dim, std=dim ** -0.5)
        sd[p + "proj_in.weight"] = rnd(dim, cdim)
        sd[p + "proj_in.bias"] = torch.zeros(dim, dtype=dtype)
        sd[p + "proj_out.weight"] = rnd(ctx, dim)
        sd[p + "proj_out.bias"] = torch.zeros(ctx, dtype=dtype)
        sd[p + "norm_out.weight"] = torch.ones(ctx, dtype=dtype)
        sd[p + "norm_out.bias"] = torch.zeros(ctx, dtype=dtype)
        for i in range(4):
            q = f"{p}layers.{i}."
            for nrm in ("0.norm1", "0.norm2", "1.0"):
                sd[q + nrm + ".weight"] = torch.ones(dim, dtype=dtype)
                sd[q + nrm + ".bias"] = torch.zeros(dim, dtype=dtype)
            sd[q + "0.to_q.weight"] = rnd(inner, dim)
            sd[q + "0.to_kv.weight"] = rnd(2 * inner, dim)
            sd[q + "0.to_out.weight"] = rnd(dim, inner)
            sd[q + "1.1.weight"] = rnd(4 * dim, dim)
            sd[q + "1.3.weight"] = rnd(dim, 4 * dim)
    for mk, _key, width in ipadapter_layers(arch, model_channels, depth):
        sd[f"ip_adapter.{mk}.to_k_ip.weight"] = rnd(width, ctx)
        sd[f"ip_adapter.{mk}.to_v_ip.weight"] = rnd(width, ctx)
    return sd


def write_random_ipadapter(path: str, arch: str, model_channels: int = 32, *, depth: int | None = None,
                           plus: bool = False, clip_embeddings_dim: int | None = None, seed: int = 0,
                           dtype=torch.float16) -> str:
    """Write :func:`random_ipadapter_state_dict` as safetensors to ``path`` (a file name without "plusv2" /
    "unnorm", which IPAdapter_plus treats as FaceID flags). Returns ``path``."""
    from safetensors.torch import save_file
    base = os.path.basename(path).lower()
    if "plusv2" in base or "unnorm" in base:
        raise ValueError("IPAdapter_plus reads 'plusv2'/'unnorm' in a file name as FaceID flags")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sd = random_ipadapter_state_dict(arch, model_channels, depth=depth, plus=plus,
                                     clip_embeddings_dim=clip_embeddings_dim, seed=seed, dtype=dtype)
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    return path


# ---------------------------------------------------------------------------------------------------------
# Native style-adapter files (StyleStudio's own loader): CSGO, IP-Adapter, IP-Adapter Plus
# ---------------------------------------------------------------------------------------------------------
#: The tiny CLIP vision model's config: ComfyUI's own clip_vision_config_*.json keys, shrunk (224 px input as the
#: real encoders, so ComfyUI's 224 preprocessing and centre crop are exercised; 257 tokens).
TINY_CLIP_VISION_CONFIG = {
    "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 32, "image_size": 224,
    "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model", "num_attention_heads": 2, "num_channels": 3, "num_hidden_layers": 3,
    "patch_size": 14, "projection_dim": 24, "torch_dtype": "float32",
}


def make_tiny_clip_vision(seed: int = 5, config: dict | None = None):
    """A ``comfy.clip_vision.ClipVisionModel`` built by ComfyUI's own class from a shrunk config file (real
    module tree and key names: vision_model.embeddings.patch_embedding, ...encoder.layers.N..., visual_projection),
    weights filled by :func:`init_weights_`. Works on the real host and on the stand-in's clip_vision."""
    import json
    import tempfile

    import comfy.clip_vision
    cfg = dict(TINY_CLIP_VISION_CONFIG, **(config or {}))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
        path = f.name
    try:
        with torch.inference_mode(False):  # normal tensors, usable in and out of inference mode
            clip = comfy.clip_vision.ClipVisionModel(path)
            init_weights_(clip.model, seed=seed)
    finally:
        os.unlink(path)
    return clip


@torch.no_grad()
def _random_resampler(sd, prefix, g, *, tokens, dim, heads, depth, feature_dim, out_dim, ff_mult=4, dtype):
    """IP-Adapter Plus / CSGO Resampler weights under ``prefix`` (keys as the published files), norms random so
    nothing is trivially zero."""
    def rnd(*shape, std=None):
        s = std if std is not None else 1.0 / math.sqrt(shape[-1])
        return (torch.randn(shape, generator=g) * s).to(dtype)

    def norm(name, width):
        sd[prefix + name + ".weight"] = (1 + 0.1 * torch.randn(width, generator=g)).to(dtype)
        sd[prefix + name + ".bias"] = (0.1 * torch.randn(width, generator=g)).to(dtype)
    inner = 64 * heads
    sd[prefix + "latents"] = rnd(1, tokens, dim, std=dim ** -0.5)
    sd[prefix + "proj_in.weight"] = rnd(dim, feature_dim)
    sd[prefix + "proj_in.bias"] = rnd(dim, std=0.1)
    sd[prefix + "proj_out.weight"] = rnd(out_dim, dim)
    sd[prefix + "proj_out.bias"] = rnd(out_dim, std=0.1)
    norm("norm_out", out_dim)
    for i in range(depth):
        q = f"layers.{i}."
        norm(q + "0.norm1", dim)
        norm(q + "0.norm2", dim)
        sd[prefix + q + "0.to_q.weight"] = rnd(inner, dim)
        sd[prefix + q + "0.to_kv.weight"] = rnd(2 * inner, dim)
        sd[prefix + q + "0.to_out.weight"] = rnd(dim, inner)
        norm(q + "1.0", dim)
        sd[prefix + q + "1.1.weight"] = rnd(ff_mult * dim, dim)
        sd[prefix + q + "1.3.weight"] = rnd(dim, ff_mult * dim)


@torch.no_grad()
def random_style_adapter_state_dict(fmt: str, arch: str, model_channels: int = 32, *, depth: int | None = None,
                                    feature_dim: int | None = None, tokens: int | None = None, seed: int = 0,
                                    resampler_dim: int = 64, resampler_heads: int = 2, resampler_depth: int = 2,
                                    dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A random-weight adapter file in one of the published layouts, with the real layer numbering of ``arch``
    (:func:`ipadapter_layers`; placeholders of width 1 for layers a depth-reduced model lacks):

    * ``"ip_adapter"``: ``image_proj.proj`` (tokens·ctx, feature_dim) + ``image_proj.norm`` (random bias, so the
      unconditional tokens -- the projector on zero embeds -- are not zero), ``ip_adapter.N.to_k_ip/to_v_ip`` for
      all 70 (SDXL) / 16 (SD1.5) layers; tokens default 4.
    * ``"ip_adapter_plus"``: ``image_proj.*`` Resampler (16 latents by default, ``resampler_dim`` wide,
      ``resampler_heads`` 64-dim heads, ``resampler_depth`` blocks) + the same layers.
    * ``"csgo"``: ``style_image_proj.*`` Resampler (32 tokens by default, output ctx), ``content_image_proj.*``
      (4-token linear projector, ignored by the loader) and ``ip_adapter`` layers for the down blocks (content
      branch) and up blocks (style branch), none for the middle block (CSGO skips it)."""
    arch = _arch(arch)
    ctx = SDXL_CONTEXT_DIM if arch == "sdxl" else SD15_CONTEXT_DIM
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=None):
        s = std if std is not None else 1.0 / math.sqrt(shape[-1])
        return (torch.randn(shape, generator=g) * s).to(dtype)
    sd: dict[str, torch.Tensor] = {}
    layers = ipadapter_layers(arch, model_channels, depth)
    if fmt == "ip_adapter":
        n, f = tokens or 4, feature_dim or 24
        sd["image_proj.proj.weight"] = rnd(n * ctx, f)
        sd["image_proj.proj.bias"] = rnd(n * ctx, std=0.1)
        sd["image_proj.norm.weight"] = (1 + 0.1 * torch.randn(ctx, generator=g)).to(dtype)
        sd["image_proj.norm.bias"] = (0.1 * torch.randn(ctx, generator=g)).to(dtype)
    elif fmt == "ip_adapter_plus":
        _random_resampler(sd, "image_proj.", g, tokens=tokens or 16, dim=resampler_dim, heads=resampler_heads,
                          depth=resampler_depth, feature_dim=feature_dim or 32, out_dim=ctx, dtype=dtype)
    elif fmt == "csgo":
        _random_resampler(sd, "style_image_proj.", g, tokens=tokens or 32, dim=resampler_dim,
                          heads=resampler_heads, depth=resampler_depth, feature_dim=feature_dim or 32, out_dim=ctx,
                          dtype=dtype)
        sd["content_image_proj.proj.weight"] = rnd(4 * ctx, feature_dim or 32)
        sd["content_image_proj.proj.bias"] = rnd(4 * ctx, std=0.1)
        sd["content_image_proj.norm.weight"] = torch.ones(ctx, dtype=dtype)
        sd["content_image_proj.norm.bias"] = torch.zeros(ctx, dtype=dtype)
        layers = [entry for entry in layers if entry[1][0] != "middle"]
    else:
        raise ValueError(f"unknown adapter format {fmt!r}")
    for mk, _key, width in layers:
        sd[f"ip_adapter.{mk}.to_k_ip.weight"] = rnd(width, ctx)
        sd[f"ip_adapter.{mk}.to_v_ip.weight"] = rnd(width, ctx)
    return sd


def write_state_dict(path: str, sd: dict[str, torch.Tensor]) -> str:
    """Write ``sd`` as .safetensors, or as a nested-dict ``torch.save`` .bin (the layout of the published
    CSGO / IP-Adapter .bin files: ``{"image_proj": {...}, "ip_adapter": {...}}``), by the file extension."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        nested: dict[str, dict] = {}
        for k, v in sd.items():
            head, _, rest = k.partition(".")
            nested.setdefault(head, {})[rest] = v
        torch.save(nested, path)
    return path
