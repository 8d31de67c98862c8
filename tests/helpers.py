"""Small helpers shared by the behavioural tests (host-agnostic: they only use the Host contract)."""
from __future__ import annotations

import copy

import torch

ADAIN, TEACHER, GUIDANCE = "StyleStudioCrossModalAdaIN", "StyleStudioTeacherLayout", "StyleStudioStyleGuidance"


def run_node(host, node_id, **inputs):
    """The node's first output, called the way ComfyUI's executor calls it (inputs by name)."""
    node = host.node(node_id)
    return getattr(node, node.FUNCTION)(**inputs)[0]


def adain(host, model, strength=1.0, start_at=0.0, end_at=1.0):
    return run_node(host, ADAIN, model=model, strength=strength, start_at=start_at, end_at=end_at)


def teacher(host, model, start_at=0.0, end_at=0.4, share_cross_attention=False, return_teacher=False):
    return run_node(host, TEACHER, model=model, start_at=start_at, end_at=end_at,
                    share_cross_attention=share_cross_attention, return_teacher=return_teacher)


def guidance(host, model, style_cfg=7.0, start_at=0.0, end_at=1.0):
    return run_node(host, GUIDANCE, model=model, style_cfg=style_cfg, start_at=start_at, end_at=end_at)


#: Where the style of the three nodes' behavioural tests comes from: "ipadapter" (ComfyUI_IPAdapter_plus on the
#: host tier, its protocol stand-in on the unit tier) or "native" (the pack's own Apply Style Adapter). Set per
#: test by the `style_source` fixture (tests/conftest.py), so every fact is asserted over both sources.
STYLE_SOURCE = {"name": "ipadapter"}


def ip(host, model, arch, **kw):
    if STYLE_SOURCE["name"] == "native":
        from test_native_adapter_support import apply_like_ipadapter
        return apply_like_ipadapter(host, model, arch, **kw)
    return host.apply_ipadapter(model, arch=arch, **kw)


def sample(host, model, arch, *, batch=1, seed=0, steps=4, cfg=5.0, positive=None, negative=None, cond_seed=1,
           **kw):
    pos = positive if positive is not None else host.conditioning(arch, cond_seed)
    neg = negative if negative is not None else host.conditioning(arch, cond_seed + 100)
    latent = host.empty_latent(arch, batch=batch)
    if "latent" in kw:
        latent = kw.pop("latent")
    return host.ksampler(model, pos, neg, latent, seed=seed, steps=steps, cfg=cfg, **kw)


def snapshot_options(model):
    """Everything a node could mutate in a MODEL: its model_options (by value) and its patch objects' state."""
    opts = model.model_options
    objects = []
    for slot in opts.get("transformer_options", {}).get("patches_replace", {}).values():
        for key, obj in slot.items():
            objects.append((key, id(obj), copy.copy(getattr(obj, "__dict__", {}))))
    return repr(_plain(opts)), [(k, i, {a: _plain(v) for a, v in d.items()}) for k, i, d in objects]


def _plain(x):
    if isinstance(x, dict):
        return {repr(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), float(x.float().sum()))
    if callable(x) or hasattr(x, "__dict__"):
        return ("object", id(x))
    return x


def assert_close_numerics(actual, expected, rel=2e-5):
    """Equal up to kernel numerics: a different batch size or chunk split changes summation order, which the tiny
    random models (latents of magnitude ~1e2-1e3) turn into absolute differences of ~1e-3. The tolerance is
    relative to the output's magnitude; real differences (style, coupling) are orders of magnitude larger."""
    import torch
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, atol=rel * scale, rtol=rel)
