"""Native style adapters: CSGO and the IP-Adapter family, read from their published files (pure torch).

What is here, and why it is shaped this way:
* `read_adapter_file` / `detect_format`: the file's format comes from its key names and tensor shapes, never its
  name. Supported: CSGO (`style_image_proj` + `ip_adapter`; only the style branch is used), IP-Adapter
  (`image_proj` = linear projection + LayerNorm) and IP-Adapter Plus (`image_proj` = Resampler), for SD1.5 and
  SDXL. Every width, token count, head count and depth is read from the weights.
* `StyleAdapterWeights`: the projector and the per-layer key/value projections (`to_k_ip`, `to_v_ip`), built
  with an `operations` namespace (`Linear`, `LayerNorm`) so the host can pass its own casting layers (ComfyUI's
  `comfy.ops.manual_cast`, which its model management can place and offload, low-VRAM included).
* `StyleAdapterAttn2`: the attn2 replace object. It follows ComfyUI_IPAdapter_plus's stacked-callback protocol
  (`callback`/`kwargs` lists, `add`, `__call__` = text attention + every callback in its sigma window, `.to()`),
  so IPAdapter_plus can `.add` its own adapters to it, our callback can be `.add`ed to IPAdapter_plus's object,
  and StyleStudio's routing (routing.py, `has_callback_protocol`) splits text and style without extra attention.
* Cloning a ComfyUI model deep-copies its patch objects: `StyleAdapter` and `StyleAdapterAttn2` define
  `__deepcopy__` so a clone copies lists and small dicts, never the adapter weights.

Layer numbering: the files number cross-attention layers the way diffusers orders its attention processors
(down blocks, up blocks, then the middle block; attn1 and attn2 alternate, so the n-th cross-attention is key
2n+1). `LAYOUTS` maps that numbering to ComfyUI's attn2 replace keys: 3-tuples (block, id, index) for SDXL and
2-tuples (block, id) for SD1.5, the keys IPAdapter_plus uses, so both packs stack in the same slots.
"""
from __future__ import annotations

import copy
import math
import os
import re
import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = ("CSGO (style_image_proj + ip_adapter), IP-Adapter (image_proj: linear + LayerNorm) and "
             "IP-Adapter Plus (image_proj: Resampler), for SD1.5 or SDXL")
BLOCKS = ("style", "up", "all")
ROLE = "style"  # what our callbacks' kwargs carry under "stylestudio_role" (routing classifies by it)
CONTEXT_WIDTH = {2048: "sdxl", 768: "sd15"}
BASE_NAMES = {"sdxl": "SDXL", "sd15": "SD1.5"}


class StyleAdapterError(ValueError):
    """A user-facing problem with an adapter file or its use; the host glue prefixes the node's name."""


# ----------------------------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class Layer:
    module_key: str          # "2n+1" in the file's numbering
    patch_key: tuple         # ComfyUI attn2 replace key
    block: str               # "input" / "middle" / "output"
    block_id: int
    block_index: int         # depth inside the SpatialTransformer
    transformer_index: int   # ComfyUI's global SpatialTransformer counter


def _layout(base: str) -> list[Layer]:
    if base == "sdxl":
        # (block, id, depth, transformer_index), in the files' order: down, up, middle
        order = ([("input", 4, 2, 0), ("input", 5, 2, 1), ("input", 7, 10, 2), ("input", 8, 10, 3)]
                 + [("output", i, 10, 5 + i) for i in (0, 1, 2)] + [("output", i, 2, 5 + i) for i in (3, 4, 5)]
                 + [("middle", 0, 10, 4)])
    else:
        order = ([("input", b, 1, t) for t, b in enumerate((1, 2, 4, 5, 7, 8))]
                 + [("output", b, 1, 7 + t) for t, b in enumerate(range(3, 12))] + [("middle", 0, 1, 6)])
    layers, n = [], 0
    for block, bid, depth, t_idx in order:
        for idx in range(depth):
            key = (block, bid, idx) if base == "sdxl" else (block, bid)
            layers.append(Layer(str(2 * n + 1), key, block, bid, idx, t_idx))
            n += 1
    return layers


LAYOUTS = {base: _layout(base) for base in ("sdxl", "sd15")}

# `blocks = "style"`: SDXL's style block is output_blocks.1 (diffusers up_blocks.0.attentions.1, InstantStyle).
# SD1.5 has no published style block: use exactly the layers of IPAdapter_plus's SD1.5 "style transfer" weight
# type (transformer_index 0-3 and 9-15 = input blocks 1, 2, 4, 5 and output blocks 5-11).
_STYLE_LAYERS = {
    "sdxl": lambda layer: layer.block == "output" and layer.block_id == 1,
    "sd15": lambda layer: layer.transformer_index in (0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15),
}


# ----------------------------------------------------------------------------------------------- reading
def read_adapter_file(path: str) -> dict[str, torch.Tensor]:
    """The file's tensors under flat keys ("image_proj.latents", "ip_adapter.1.to_k_ip.weight", ...).
    `.safetensors` first; `.bin`/`.pth`/`.pt` only through `torch.load(weights_only=True)` (no pickled code)."""
    name = os.path.basename(path)
    ext = os.path.splitext(name)[1].lower()
    if not os.path.isfile(path):
        raise StyleAdapterError(f"adapter file {name} does not exist ({path}).")
    try:
        if ext == ".safetensors":
            from safetensors.torch import load_file
            raw = load_file(path, device="cpu")
        elif ext in (".bin", ".pth", ".pt", ".ckpt"):
            raw = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise StyleAdapterError(f"{name}: unsupported file type {ext!r}; use a .safetensors (or .bin) file.")
    except StyleAdapterError:
        raise
    except Exception as e:  # truncated download, HTML error page, pickled code, ...
        raise StyleAdapterError(
            f"could not read adapter file {name}: it is corrupt, truncated or not a weights file "
            f"({type(e).__name__}: {str(e)[:200]}). Download it again into models/ipadapter.") from None
    if not isinstance(raw, dict):
        raise StyleAdapterError(f"adapter file {name} holds a {type(raw).__name__}, not a state dict.")
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix, obj):
        for k, v in obj.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(key + ".", v)
            elif isinstance(v, torch.Tensor):
                flat[key] = v
    walk("", raw)
    if not flat:
        raise StyleAdapterError(f"adapter file {name} contains no tensors.")
    return flat


# ------------------------------------------------------------------------------------------------ format
@dataclass
class AdapterSpec:
    format: str                  # "csgo" | "ip_adapter" | "ip_adapter_plus"
    base: str                    # "sdxl" | "sd15"
    context_dim: int             # token width (= the UNet's cross-attention context width)
    tokens: int                  # style tokens per image
    projector: str               # "linear" | "resampler"
    feature: str                 # CLIP-vision output it reads: "image_embeds" | "penultimate_hidden_states"
    feature_dim: int
    proj_prefix: str             # "image_proj." or "style_image_proj."
    layer_widths: dict = field(default_factory=dict)   # module key -> width, style layers only
    resampler: dict | None = None                       # dim, depth, heads, dim_head, ff_inner, output_dim
    dtype: torch.dtype = torch.float32

    @property
    def label(self) -> str:
        name = {"csgo": "CSGO", "ip_adapter": "IP-Adapter", "ip_adapter_plus": "IP-Adapter Plus"}[self.format]
        return f"{name} {BASE_NAMES[self.base]} ({self.tokens} style tokens, {self.feature_dim}-wide CLIP features)"

    def layers(self) -> list[Layer]:
        """The cross-attention layers that carry style weights in this file, in file order."""
        return [layer for layer in LAYOUTS[self.base] if layer.module_key in self.layer_widths]

    def layers_for(self, blocks: str) -> list[Layer]:
        if blocks not in BLOCKS:
            raise StyleAdapterError(f"blocks must be one of {', '.join(BLOCKS)}, got {blocks!r}.")
        layers = self.layers()
        if blocks == "style":
            layers = [layer for layer in layers if _STYLE_LAYERS[self.base](layer)]
        elif blocks == "up":
            layers = [layer for layer in layers if layer.block == "output"]
        if not layers:
            raise StyleAdapterError(f"this {self.label} file has no style weights in the {blocks!r} blocks; "
                                    f"choose another blocks setting.")
        return layers


_LAYER_KEY = re.compile(r"^(\d+)\.(to_k_ip|to_v_ip)\.weight$")


def _groups(sd: dict) -> dict[str, dict]:
    groups: dict[str, dict] = {}
    for key, value in sd.items():
        head, _, rest = key.partition(".")
        groups.setdefault(head, {})[rest] = value
    if "adapter_modules" in groups and "ip_adapter" not in groups:  # training-script checkpoints
        groups["ip_adapter"] = groups.pop("adapter_modules")
    return groups


def _refuse(name: str, seen: str):
    raise StyleAdapterError(f"{name}: this is {seen}, which StyleStudio's native adapter does not support. "
                            f"Supported: {SUPPORTED}. Use ComfyUI_IPAdapter_plus's nodes for this file.")


def detect_format(sd: dict[str, torch.Tensor], name: str = "adapter") -> AdapterSpec:
    """Format and every dimension from key names and shapes, or a StyleAdapterError naming what was seen."""
    g = _groups(sd)
    ip = g.get("ip_adapter")
    if not ip:
        seen = ", ".join(sorted(g)[:6]) or "nothing"
        _refuse(name, f"not an IP-Adapter-style file (no ip_adapter.* layer weights; top-level keys: {seen})")
    if any("lora" in k for k in ip):
        _refuse(name, "an IP-Adapter FaceID file (LoRA layers in ip_adapter)")

    if "style_image_proj" in g:
        fmt, proj, prefix = "csgo", g["style_image_proj"], "style_image_proj."
    elif "image_proj" in g:
        proj, prefix = g["image_proj"], "image_proj."
        fmt = None
    else:
        _refuse(name, "a file with ip_adapter layers but no image_proj / style_image_proj projector "
                      "(e.g. a CSGO content-only or unknown checkpoint)")

    # --- the per-layer projections -------------------------------------------------------------------------
    widths: dict[str, int] = {}
    context = set()
    for key, t in ip.items():
        m = _LAYER_KEY.match(key)
        if m is None or t.ndim != 2:
            _refuse(name, f"an adapter with unexpected layer weights ({'ip_adapter.' + key}, shape "
                          f"{tuple(t.shape)})")
        n, kind = m.groups()
        other = ip.get(f"{n}.{'to_v_ip' if kind == 'to_k_ip' else 'to_k_ip'}.weight")
        if other is None or other.shape != t.shape:
            raise StyleAdapterError(f"{name}: layer {n} has {kind} but no matching partner of the same shape; "
                                    "the file is incomplete.")
        widths[n] = int(t.shape[0])
        context.add(int(t.shape[1]))
    if len(context) != 1:
        _refuse(name, f"an adapter whose layers read different context widths {sorted(context)}")
    ctx = context.pop()
    base = CONTEXT_WIDTH.get(ctx)
    if base is None:
        _refuse(name, f"an adapter for a {ctx}-wide text context (SD1.5 uses 768, SDXL 2048; SD2.x and other "
                      "families are not supported)")
    valid = {layer.module_key for layer in LAYOUTS[base]}
    stray = sorted((k for k in widths if k not in valid), key=int)
    if stray:
        _refuse(name, f"an adapter whose layer numbering ({', '.join(stray[:5])}) does not match "
                      f"{BASE_NAMES[base]}'s {len(valid)} cross-attention layers")
    dtype = next(iter(ip.values())).dtype

    # --- the projector --------------------------------------------------------------------------------------
    if "latents" in proj:
        spec = _resampler_spec(proj, name)
        tokens, out_dim, feature_dim = spec["tokens"], spec["output_dim"], spec["feature_dim"]
        projector, feature = "resampler", "penultimate_hidden_states"
        if fmt is None:
            if spec["dim"] == 2048 and base == "sdxl":
                _refuse(name, "a Kolors IP-Adapter Plus file (Resampler width 2048)")
            if feature_dim == 512:
                _refuse(name, "a face-embedding adapter (InstantID / FaceID style: 512-wide face features)")
            fmt = "ip_adapter_plus"
    elif set(proj) >= {"proj.weight", "norm.weight"} and proj["proj.weight"].ndim == 2:
        if any(k.startswith("proj.") and k not in ("proj.weight", "proj.bias") for k in proj):
            _refuse(name, "an adapter with an MLP projector (IP-Adapter Full Face or FaceID Portrait)")
        out_dim = int(proj["norm.weight"].shape[0])
        rows = int(proj["proj.weight"].shape[0])
        if rows % out_dim:
            raise StyleAdapterError(f"{name}: image_proj.proj has {rows} outputs, not a multiple of its norm "
                                    f"width {out_dim}; the file is damaged.")
        tokens, feature_dim = rows // out_dim, int(proj["proj.weight"].shape[1])
        projector, feature, spec = "linear", "image_embeds", None
        fmt = fmt or "ip_adapter"
    elif any(k.startswith("perceiver_resampler.") for k in proj):
        _refuse(name, "an IP-Adapter FaceID Plus file (perceiver_resampler projector)")
    elif any(k.startswith("proj.0.") for k in proj):
        _refuse(name, "an adapter with an MLP projector (IP-Adapter Full Face or FaceID)")
    else:
        _refuse(name, f"an adapter with an unknown projector ({', '.join(sorted(proj)[:4])})")
    if out_dim != ctx:
        raise StyleAdapterError(f"{name}: the projector makes {out_dim}-wide tokens but the layers read {ctx}; "
                                "the file is inconsistent.")

    if fmt == "csgo":
        # CSGO's down-block weights belong to its content branch: style tokens never pass them.
        up = {layer.module_key for layer in LAYOUTS[base] if layer.block == "output"}
        widths = {k: w for k, w in widths.items() if k in up}
        if not widths:
            _refuse(name, "a CSGO file without up-block (style) layer weights")
    return AdapterSpec(fmt, base, ctx, tokens, projector, feature, feature_dim, prefix, widths, spec, dtype)


def _resampler_spec(proj: dict, name: str) -> dict:
    try:
        latents = proj["latents"]
        dim = int(latents.shape[-1])
        depth = 1 + max(int(k.split(".")[1]) for k in proj if k.startswith("layers."))
        inner = int(proj["layers.0.0.to_q.weight"].shape[0])
        ff_inner = int(proj["layers.0.1.1.weight"].shape[0])
        spec = {"tokens": int(latents.shape[1]), "dim": dim, "depth": depth, "dim_head": 64,
                "heads": inner // 64, "ff_inner": ff_inner, "output_dim": int(proj["proj_out.weight"].shape[0]),
                "feature_dim": int(proj["proj_in.weight"].shape[1])}
    except (KeyError, ValueError, IndexError) as e:
        raise StyleAdapterError(f"{name}: its Resampler projector is incomplete ({e}).") from None
    if inner % 64:
        _refuse(name, f"an adapter whose Resampler has an inner width of {inner} (not 64-wide heads)")
    return spec


# ------------------------------------------------------------------------------------------------- modules
class CastOps:
    """Default `operations`: Linear/LayerNorm whose weights are cast to the input's device and dtype at call time
    (as ComfyUI's `comfy.ops.manual_cast`), so fp16 file weights serve fp32 projector math."""

    class Linear(nn.Linear):
        def forward(self, x):
            b = self.bias.to(x) if self.bias is not None else None
            return F.linear(x, self.weight.to(x), b)

    class LayerNorm(nn.LayerNorm):
        def forward(self, x):
            w = self.weight.to(x) if self.weight is not None else None
            b = self.bias.to(x) if self.bias is not None else None
            return F.layer_norm(x, self.normalized_shape, w, b, self.eps)


class LinearProjector(nn.Module):
    """IP-Adapter's image projection: one linear map to `tokens` tokens, then LayerNorm per token."""

    def __init__(self, feature_dim, tokens, out_dim, ops, **factory):
        super().__init__()
        self.tokens, self.out_dim = tokens, out_dim
        self.proj = ops.Linear(feature_dim, tokens * out_dim, **factory)
        self.norm = ops.LayerNorm(out_dim, **factory)

    def forward(self, x):
        return self.norm(self.proj(x).reshape(x.shape[0], self.tokens, self.out_dim))


class _PerceiverAttention(nn.Module):
    def __init__(self, dim, heads, dim_head, ops, **factory):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm1 = ops.LayerNorm(dim, **factory)
        self.norm2 = ops.LayerNorm(dim, **factory)
        self.to_q = ops.Linear(dim, inner, bias=False, **factory)
        self.to_kv = ops.Linear(dim, 2 * inner, bias=False, **factory)
        self.to_out = ops.Linear(inner, dim, bias=False, **factory)

    def forward(self, x, latents):
        x, latents = self.norm1(x), self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        # latents attend to the image features and to themselves
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)

        def heads(t):
            return t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class Resampler(nn.Module):
    """The Perceiver resampler of IP-Adapter Plus / CSGO (Flamingo's design): learned latent queries attend to
    the projected image features through `depth` blocks of (cross-attention, feed-forward), each residual."""

    def __init__(self, *, tokens, dim, depth, heads, dim_head, ff_inner, output_dim, feature_dim, ops, **factory):
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(1, tokens, dim, **factory))
        self.proj_in = ops.Linear(feature_dim, dim, **factory)
        self.proj_out = ops.Linear(dim, output_dim, **factory)
        self.norm_out = ops.LayerNorm(output_dim, **factory)
        self.layers = nn.ModuleList(
            nn.ModuleList([_PerceiverAttention(dim, heads, dim_head, ops, **factory),
                           nn.Sequential(ops.LayerNorm(dim, **factory),
                                         ops.Linear(dim, ff_inner, bias=False, **factory), nn.GELU(),
                                         ops.Linear(ff_inner, dim, bias=False, **factory))])
            for _ in range(depth))

    def forward(self, x):
        latents = self.latents.to(x).expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class _KV(nn.Module):
    def __init__(self, context_dim, width, ops, **factory):
        super().__init__()
        self.to_k_ip = ops.Linear(context_dim, width, bias=False, **factory)
        self.to_v_ip = ops.Linear(context_dim, width, bias=False, **factory)


class StyleAdapterWeights(nn.Module):
    """Projector + per-layer key/value projections of the style branch (`kv[module_key]`)."""

    def __init__(self, spec: AdapterSpec, ops=CastOps, device="cpu"):
        super().__init__()
        factory = {"dtype": spec.dtype, "device": device}
        if spec.projector == "resampler":
            r = {k: v for k, v in spec.resampler.items()}
            self.projector = Resampler(ops=ops, **r, **factory)
        else:
            self.projector = LinearProjector(spec.feature_dim, spec.tokens, spec.context_dim, ops, **factory)
        self.kv = nn.ModuleDict({k: _KV(spec.context_dim, w, ops, **factory) for k, w in spec.layer_widths.items()})


def build_weights(spec: AdapterSpec, sd: dict, ops=CastOps) -> StyleAdapterWeights:
    """The module holding the file's own tensors (no copy, no random init: built on the meta device)."""
    module = StyleAdapterWeights(spec, ops, device="meta")
    state = {}
    for key, t in sd.items():
        if key.startswith(spec.proj_prefix):
            state["projector." + key[len(spec.proj_prefix):]] = t
        else:
            head, _, rest = key.partition(".")
            if head in ("ip_adapter", "adapter_modules"):
                n = rest.split(".", 1)[0]
                if n in spec.layer_widths:
                    state["kv." + rest] = t
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise StyleAdapterError(f"the {spec.label} weights do not fit their architecture: {str(e)[:300]}") from None
    return module.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ adapter
class StyleAdapter:
    """A loaded style adapter (the STYLE_ADAPTER value). Shared, never copied: `copy.deepcopy` returns the same
    object, so cloning a MODEL that carries it costs nothing."""

    def __init__(self, spec: AdapterSpec, weights: StyleAdapterWeights, source: str):
        self.spec = spec
        self.weights = weights
        self.source = source
        self.host_models: list = []   # what the host glue registers with its model management (a ModelPatcher)

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __repr__(self):
        return f"StyleAdapter({self.source}: {self.spec.label})"

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.weights.state_dict().values())

    @torch.no_grad()
    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(N, ...) CLIP features of N images -> (1, N·tokens, C) style tokens in fp32: several style images are
        concatenated along the token axis, so every latent sees all of them."""
        tokens = self.weights.projector(features.float())
        return tokens.reshape(1, -1, tokens.shape[-1])


def load_style_adapter(path: str, ops=CastOps) -> StyleAdapter:
    name = os.path.basename(path)
    sd = read_adapter_file(path)
    spec = detect_format(sd, name)
    return StyleAdapter(spec, build_weights(spec, sd, ops), name)


# -------------------------------------------------------------------------------------------- attention
_sigma_cache: list = [None, 0.0]  # (weakref to this call's sigmas tensor, its value)


def sigma_of(extra_options: dict) -> float:
    """The call's sigma as a float (IPAdapter_plus's reading), synchronised once per model call, not per layer:
    every block of one forward sees the same `sigmas` tensor object."""
    sigmas = extra_options.get("sigmas")
    if sigmas is None:
        return 999999999.9
    ref = _sigma_cache[0]
    if ref is not None and ref() is sigmas:
        return _sigma_cache[1]
    value = float(sigmas.detach().flatten()[0])
    try:
        _sigma_cache[0] = weakref.ref(sigmas)
        _sigma_cache[1] = value
    except TypeError:
        pass
    return value


def _token_grid(extra_options: dict, seq_len: int) -> tuple[int, int]:
    """(h, w) of this layer's token grid: the latent halved (rounding up, as the UNet's stride-2 convolutions
    do) until it has seq_len tokens."""
    _, _, h, w = extra_options["original_shape"]
    for _ in range(8):
        if h * w == seq_len:
            return h, w
        h, w = -(-h // 2), -(-w // 2)
    side = int(math.sqrt(seq_len))
    return side, seq_len // side


def _fit_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    if t.shape[0] >= n:
        return t[:n]
    return torch.cat([t, t[-1:].expand(n - t.shape[0], *t.shape[1:])])


def style_adapter_attention(out, q, k, v, extra_options, *, adapter: StyleAdapter, layer: str, cond, uncond,
                            weight: float, attention: Callable, mask=None, **_):
    """The style term of one attn2 layer: `weight · Attn(Q, K_ip, V_ip)` (× mask), heads as the layer's own.
    Rows of chunks whose `cond_or_uncond` entry is 1 (the negative prompt, or StyleStudio's extra style branch)
    attend to the unconditional / negative style tokens, all others to the style tokens; every chunk holds
    `rows // chunks` latent rows, as in IPAdapter_plus."""
    if weight == 0:
        return 0
    kv = adapter.weights.kv[layer]
    chunks = extra_options["cond_or_uncond"]
    per = q.shape[0] // len(chunks)
    tokens = torch.cat([cond, uncond]).to(device=q.device, dtype=q.dtype)
    ip_k, ip_v = kv.to_k_ip(tokens), kv.to_v_ip(tokens)
    pick = [1 if c == 1 else 0 for c in chunks]
    if len(set(pick)) == 1:
        ks, vs = ip_k[pick[0]:pick[0] + 1], ip_v[pick[0]:pick[0] + 1]
        ks, vs = ks.expand(q.shape[0], -1, -1), vs.expand(q.shape[0], -1, -1)
    else:
        index = torch.tensor(pick, device=q.device).repeat_interleave(per)
        ks, vs = ip_k[index], ip_v[index]
    term = attention(q, ks, vs, extra_options["n_heads"]) * weight
    if mask is not None:
        h, w = _token_grid(extra_options, q.shape[1])
        m = F.interpolate(mask.to(device=q.device, dtype=q.dtype).unsqueeze(1), size=(h, w), mode="bilinear")
        m = _fit_rows(m.reshape(m.shape[0], h * w, 1), per).repeat(len(chunks), 1, 1)
        term = term * m
    return term.to(q.dtype)


class StyleAdapterAttn2:
    """attn2 replace with IPAdapter_plus's stacked-callback protocol (see module docstring)."""

    def __init__(self, attention: Callable):
        self.attention = attention
        self.callback: list = []
        self.kwargs: list = []

    def add(self, callback, **kwargs):
        self.callback.append(callback)
        self.kwargs.append(kwargs)

    def __call__(self, q, k, v, extra_options):
        out = self.attention(q, k, v, extra_options["n_heads"])
        sigma = sigma_of(extra_options)
        for callback, kw in zip(self.callback, self.kwargs):
            if kw["sigma_end"] <= sigma <= kw["sigma_start"]:
                out = out + callback(out, q, k, v, extra_options, **kw)
        return out.to(q.dtype)

    def to(self, device_or_dtype, *args, **kwargs):
        # ComfyUI calls this when it loads the model: our small per-image tensors follow the device (the adapter
        # weights are placed by model management itself). Other packs' kwargs are left as they are.
        if isinstance(device_or_dtype, (torch.device, str)) and not isinstance(device_or_dtype, torch.dtype):
            device = torch.device(device_or_dtype)
            for kw in self.kwargs:
                if kw.get("stylestudio_role") is not None:
                    for name in ("cond", "uncond", "mask"):
                        if isinstance(kw.get(name), torch.Tensor):
                            kw[name] = kw[name].to(device)
        return self

    def __deepcopy__(self, memo):
        # A MODEL clone gets its own lists and dicts (so a later `.add` stays on that clone) but shares every
        # value: adapter modules and token tensors are never modified in place by either pack.
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        new.callback = list(self.callback)
        new.kwargs = [dict(kw) for kw in self.kwargs]
        memo[id(self)] = new
        return new


@torch.no_grad()
def style_tokens(adapter: StyleAdapter, encode: Callable, encode_zero_pixels: Callable, image,
                 image_negative=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(style tokens, unconditional tokens), each (1, images·tokens, C), computed once per node execution.

    `encode(images)` returns the CLIP-vision features this adapter reads (`spec.feature`) for a batch of images;
    `encode_zero_pixels()` those of one all-zero pixel tensor *after* CLIP normalisation. Without a negative image
    the unconditional tokens are what the reference code computes: CSGO and IP-Adapter project all-zero features
    (`zeros_like` of the style image's features), IP-Adapter Plus projects the encoder's output for zero pixels.
    A negative image's tokens replace them (the paper's negative style for style-based CFG)."""
    features = encode(image)
    cond = adapter.project(features)
    if image_negative is not None:
        uncond = adapter.project(_fit_rows(encode(image_negative), features.shape[0]))
    elif adapter.spec.format == "ip_adapter_plus":
        zero = encode_zero_pixels()
        uncond = adapter.project(zero.expand(features.shape[0], *zero.shape[1:]))
    else:
        uncond = adapter.project(torch.zeros_like(features))
    return cond, uncond


def style_kwargs(adapter: StyleAdapter, layer: Layer, *, cond, uncond, weight: float, sigma_start: float,
                 sigma_end: float, attention: Callable, mask=None) -> dict:
    return {"adapter": adapter, "layer": layer.module_key, "cond": cond, "uncond": uncond, "weight": float(weight),
            "mask": mask, "sigma_start": float(sigma_start), "sigma_end": float(sigma_end),
            "attention": attention, "stylestudio_role": ROLE}


def install(attn2_slots: dict, adapter: StyleAdapter, layers: list[Layer], *, attention: Callable,
            **kwargs) -> dict:
    """A new attn2 slot dict (the input is not modified) with our callback in each layer's slot: added to an
    object that already follows the callback protocol there (ours or IPAdapter_plus's, which is what it does
    itself), a new StyleAdapterAttn2 in an empty slot. Anything else in a slot is an error (replacing it would
    silently drop another pack's patch)."""
    slots = dict(attn2_slots)
    for layer in layers:
        kw = style_kwargs(adapter, layer, attention=attention, **kwargs)
        current = slots.get(layer.patch_key)
        if current is None:
            patch = StyleAdapterAttn2(attention)
            patch.add(style_adapter_attention, **kw)
            slots[layer.patch_key] = patch
        elif _stackable(current):
            current = slots[layer.patch_key] = _own_copy(current)
            current.add(style_adapter_attention, **kw)
        else:
            raise StyleAdapterError(
                f"the cross-attention slot {layer.patch_key} already holds {type(current).__name__} from another "
                "node, which cannot stack a second adapter. Apply the style adapter before that node.")
    return slots


def _own_copy(obj):
    """A copy of a stackable slot object whose lists are its own, so adding our callback leaves the input model's
    object as it was (the MODEL is cloned without deep-copying other nodes' patches: their adapter modules are
    shared, never copied)."""
    mine = copy.copy(obj)
    mine.callback, mine.kwargs = list(obj.callback), list(obj.kwargs)
    if isinstance(getattr(obj, "multigpu_kwargs", None), dict):  # IPAdapter_plus's per-device kwargs lists
        mine.multigpu_kwargs = {device: list(kws) for device, kws in obj.multigpu_kwargs.items()}
    return mine


def _stackable(obj) -> bool:
    return (callable(getattr(obj, "add", None)) and isinstance(getattr(obj, "callback", None), list)
            and isinstance(getattr(obj, "kwargs", None), list))
