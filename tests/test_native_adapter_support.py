"""Shared helpers of the native style-adapter tests (no tests here): adapter files in ComfyUI's ipadapter folder,
the tiny CLIP vision model, and references written from the published architectures (not from the pack)."""
from __future__ import annotations

import atexit
import math
import os

import torch
import torch.nn.functional as F

from helpers import run_node
from hosts import _tiny_weights as tw

LOADER, APPLY = "StyleStudioStyleAdapterLoader", "StyleStudioApplyStyleAdapter"
#: tiny model sizes of both hosts (tests/hosts/*: model_channels 32, SDXL depth 1)
DEPTH = {"sdxl": 1, "sd15": None}
CTX = {"sdxl": 2048, "sd15": 768}

_written: dict = {}
_clip = {}
# drop the CLIP vision patcher while the interpreter is intact (ModelPatcher.__del__ fails during shutdown)
atexit.register(_clip.clear)


def ipadapter_folder(host) -> str:
    host.node(LOADER).INPUT_TYPES()  # registers models/ipadapter when no other pack did
    import folder_paths
    folder = folder_paths.get_folder_paths("ipadapter")[0]
    os.makedirs(folder, exist_ok=True)
    return folder


def write_adapter(host, fmt, arch, *, name=None, ext=".safetensors", sd=None, **kw) -> str:
    """Write a random-weight adapter file (real key names and layer numbering) once; returns its file name."""
    name = name or f"tiny_{fmt}_{arch}_{'_'.join(f'{k}{v}' for k, v in sorted(kw.items()))}{ext}"
    if name not in _written:
        if sd is None:
            sd = tw.random_style_adapter_state_dict(fmt, arch, 32, depth=DEPTH[arch], seed=kw.pop("seed", 11), **kw)
        tw.write_state_dict(os.path.join(ipadapter_folder(host), name), sd)
        _written[name] = sd
    return name


def state_dict_of(name):
    return _written[name]


def load(host, name):
    return run_node(host, LOADER, adapter_name=name)


def clip_vision(host):
    if "clip" not in _clip:
        _clip["clip"] = tw.make_tiny_clip_vision(seed=5)
    return _clip["clip"]


def image(seed, h=64, w=64, batch=1):
    return torch.rand(batch, h, w, 3, generator=torch.Generator().manual_seed(seed))


def apply(host, model, adapter, img=None, *, weight=1.0, blocks="up", start_at=0.0, end_at=1.0, negative=None,
          mask=None):
    img = image(1) if img is None else img
    return run_node(host, APPLY, model=model, style_adapter=adapter, clip_vision=clip_vision(host), image=img,
                    weight=weight, blocks=blocks, start_at=start_at, end_at=end_at, image_negative=negative,
                    attn_mask=mask)


#: IPAdapter_plus weight types with a native equivalent (the same layers, docs/native_adapters.md)
NATIVE_BLOCKS = {"style transfer": "style", "linear": "all"}
#: the native adapter per base model in the behavioural tests: the paper's CSGO on SDXL, IP-Adapter on SD1.5
NATIVE_FORMAT = {"sdxl": "csgo", "sd15": "ip_adapter"}


def apply_like_ipadapter(host, model, arch, *, weight=1.0, weight_type="style transfer", start_at=0.0, end_at=1.0,
                         negative_image=False, mask=None, seed=0):
    """helpers.ip() on the native path: the same call as host.apply_ipadapter, through the pack's own nodes
    (style image and negative style image from `seed`, as the IPAdapter path draws its embeds from it)."""
    import pytest
    blocks = NATIVE_BLOCKS.get(weight_type)
    if blocks is None:
        pytest.skip(f"weight type {weight_type!r} is IPAdapter_plus's; the native adapter has no equivalent")
    adapter = load(host, write_adapter(host, NATIVE_FORMAT[host_arch(arch)], host_arch(arch)))
    negative = image(seed + 100003) if negative_image else None
    attn_mask = None if mask is None else torch.as_tensor(mask, dtype=torch.float32)
    return apply(host, model, adapter, image(seed + 1), weight=weight, blocks=blocks, start_at=start_at,
                 end_at=end_at, negative=negative, mask=attn_mask)


def host_arch(arch) -> str:
    return "sdxl" if "xl" in str(arch).lower() else "sd15"


def sample(host, model, arch, *, cfg=5.0, steps=3, batch=1, seed=0, **kw):
    return host.ksampler(model, host.conditioning(arch, 1), host.conditioning(arch, 2),
                         host.empty_latent(arch, batch=batch), seed=seed, steps=steps, cfg=cfg, **kw)


def attn2_slots(model) -> dict:
    return model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})


def close(actual, expected, rel=1e-5):
    actual, expected = actual.detach().float(), expected.detach().float()
    scale = float(expected.abs().max())
    err = float((actual - expected).abs().max())
    assert err <= rel * max(scale, 1e-12), f"max abs diff {err:.3g} vs scale {scale:.3g} (rel {err / scale:.3g})"


# ------------------------------------------------------------------- references (from the published designs)
def _ln(x, sd, p, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"].float(), sd[p + ".bias"].float(), eps)


def reference_resampler(sd, prefix, x):
    """IP-Adapter's Resampler (Perceiver, Flamingo) from its published description: latents (1, T, D) attend to
    [proj_in(x); latents] with q·k scaled by dim_head^-1/4 on both sides, softmax, per 64-wide head; a residual
    pre-norm feed-forward (LayerNorm, Linear, GELU, Linear); proj_out, LayerNorm."""
    P = lambda k: sd[prefix + k].float()  # noqa: E731
    x = x.float() @ P("proj_in.weight").T + P("proj_in.bias")
    lat = P("latents").repeat(x.shape[0], 1, 1)
    depth = 1 + max(int(k[len(prefix):].split(".")[1]) for k in sd if k.startswith(prefix + "layers."))
    for i in range(depth):
        a = f"{prefix}layers.{i}.0."
        xn, ln_ = _ln(x, sd, a + "norm1"), _ln(lat, sd, a + "norm2")
        wq = sd[a + "to_q.weight"].float()
        heads = wq.shape[0] // 64
        q = ln_ @ wq.T
        k, v = (torch.cat([xn, ln_], dim=1) @ sd[a + "to_kv.weight"].float().T).chunk(2, dim=-1)
        b, n = lat.shape[:2]
        split = lambda t: t.reshape(b, t.shape[1], heads, 64).permute(0, 2, 1, 3)  # noqa: E731
        s = 1 / math.sqrt(math.sqrt(64))
        w = ((split(q) * s) @ (split(k) * s).transpose(-2, -1)).softmax(dim=-1)
        o = (w @ split(v)).permute(0, 2, 1, 3).reshape(b, n, -1)
        lat = o @ sd[a + "to_out.weight"].float().T + lat
        f = f"{prefix}layers.{i}.1."
        h = F.gelu(_ln(lat, sd, f + "0") @ sd[f + "1.weight"].float().T)
        lat = h @ sd[f + "3.weight"].float().T + lat
    out = lat @ P("proj_out.weight").T + P("proj_out.bias")
    return _ln(out, sd, prefix + "norm_out")


def reference_linear_projector(sd, prefix, x):
    """IP-Adapter's ImageProjModel: Linear to tokens·C, reshape to tokens, LayerNorm."""
    w, bias = sd[prefix + "proj.weight"].float(), sd[prefix + "proj.bias"].float()
    c = sd[prefix + "norm.weight"].shape[0]
    return _ln((x.float() @ w.T + bias).reshape(x.shape[0], -1, c), sd, prefix + "norm")


def reference_ip_attention(q, tokens, sd, module_key, heads):
    """Attn(Q, K_ip, V_ip) per head, K_ip/V_ip = to_k_ip/to_v_ip(tokens), as the IP-Adapter attention processor."""
    k = tokens.float() @ sd[f"ip_adapter.{module_key}.to_k_ip.weight"].float().T
    v = tokens.float() @ sd[f"ip_adapter.{module_key}.to_v_ip.weight"].float().T
    b, n, inner = q.shape
    d = inner // heads
    qh = q.float().reshape(b, n, heads, d).transpose(1, 2)
    kh = k.reshape(k.shape[0], -1, heads, d).transpose(1, 2).expand(b, -1, -1, -1)
    vh = v.reshape(v.shape[0], -1, heads, d).transpose(1, 2).expand(b, -1, -1, -1)
    w = (qh @ kh.transpose(-2, -1) / math.sqrt(d)).softmax(dim=-1)
    return (w @ vh).transpose(1, 2).reshape(b, n, inner)


def features(host, fmt, img):
    """The CLIP-vision features a format reads, through ComfyUI's own encode_image (224, centre crop)."""
    out = clip_vision(host).encode_image(img, crop=True)
    return out.image_embeds if fmt == "ip_adapter" else out.penultimate_hidden_states


def zero_pixel_features(host):
    cv = clip_vision(host)
    with torch.no_grad():
        return cv.model(pixel_values=torch.zeros(1, 3, 224, 224), intermediate_output=-2)[1].float()


def reference_tokens(host, fmt, sd, img, negative=None):
    """(cond, uncond) tokens (1, T, C) as the reference code computes them (see the issue / method.md)."""
    prefix = "style_image_proj." if fmt == "csgo" else "image_proj."
    proj = reference_linear_projector if fmt == "ip_adapter" else reference_resampler
    f = features(host, fmt, img).float()
    cond = proj(sd, prefix, f)
    if negative is not None:
        uncond = proj(sd, prefix, features(host, fmt, negative).float())
    elif fmt == "ip_adapter_plus":
        uncond = proj(sd, prefix, zero_pixel_features(host))
    else:
        uncond = proj(sd, prefix, torch.zeros_like(f))
    return cond.reshape(1, -1, cond.shape[-1]), uncond.reshape(1, -1, uncond.shape[-1])
