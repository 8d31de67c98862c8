"""StyleStudio together with the other things a ComfyUI graph puts on the conditioning and sampling path:
regional (area / mask) conditioning, ControlNet, other sampling patches (PAG, RescaleCFG, CFGZeroStar) and the
SamplerCustomAdvanced path (CFGGuider, DualCFGGuider).

Every test runs all three StyleStudio nodes at once (AdaIN, Teacher Layout with return_teacher, Style Guidance
with style_cfg != cfg) and checks the pack's core promise under the extra machinery: it runs, the batch is
right, and the teacher rows equal a plain run of the base model (no IP-Adapter) with the same extras.

Area/mask conds run on both tiers (the stand-in implements them); ControlNet, the other patch nodes and the
custom-sampler nodes exist only in the real ComfyUI, so those tests skip on the stand-in.
"""
import pytest
import torch

from helpers import assert_close_numerics, adain, guidance, ip, sample, teacher

REAL_HOST_ONLY = ("needs the real ComfyUI (host tier: set COMFYUI_PATH): the stand-in has no {what}")
CFG, STYLE_CFG = 5.0, 8.0
BATCH = 2


def real_host_only(host, what):
    if host.name != "comfyui":
        pytest.skip(REAL_HOST_ONLY.format(what=what))


@pytest.fixture
def base(host, arch):
    return host.tiny_model(arch)


def stylestudio(host, model, arch, *, return_teacher=True, style_cfg=STYLE_CFG):
    """IP-Adapter (with a negative style image) + all three StyleStudio nodes."""
    with_ip = ip(host, model, arch, negative_image=True)
    return guidance(host, teacher(host, adain(host, with_ip), return_teacher=return_teacher), style_cfg=style_cfg)


def assert_differs(a, b, atol=1e-3):
    assert not torch.allclose(a, b, atol=atol), "expected the outputs to differ"


# ---------------------------------------------------------------------------------------------------------
# 1. Area / mask (regional) conditioning: both tiers
# ---------------------------------------------------------------------------------------------------------
def _with_values(cond, values):
    return [[t[0], {**t[1], **values}] for t in cond]


def set_area(host, cond, *, height, width, y, x, strength=1.0):
    """ConditioningSetArea (pixel inputs, stored in latent units). On the real host through the real node, and
    checked to equal the hand-built dict the stand-in tier uses."""
    values = {"area": (height // 8, width // 8, y // 8, x // 8), "strength": strength, "set_area_to_bounds": False}
    manual = _with_values(cond, values)
    if host.name == "comfyui":
        import nodes
        real = nodes.ConditioningSetArea().append(cond, width, height, x, y, strength)[0]
        assert [r[1] for r in real] == [m[1] for m in manual]
        return real
    return manual


def set_mask(host, cond, mask, *, strength=1.0):
    """ConditioningSetMask with set_cond_area "default"."""
    mask = mask if mask.ndim == 3 else mask.unsqueeze(0)
    manual = _with_values(cond, {"mask": mask, "set_area_to_bounds": False, "mask_strength": strength})
    if host.name == "comfyui":
        import nodes
        real = nodes.ConditioningSetMask().append(cond, mask, "default", strength)[0]
        assert all(set(r[1]) == set(m[1]) and torch.equal(r[1]["mask"], m[1]["mask"])
                   and r[1]["mask_strength"] == m[1]["mask_strength"] for r, m in zip(real, manual))
        return real
    return manual


def regional_positive(host, arch, mask_batch=1):
    """A full prompt + an area prompt on the right half + a mask prompt on the bottom half (64 px image)."""
    full = host.conditioning(arch, 1)
    area = set_area(host, host.conditioning(arch, 2), height=64, width=32, y=0, x=32)
    mask = torch.zeros(mask_batch, 64, 64)
    mask[:, 32:, :] = 1.0
    if mask_batch > 1:
        mask[1:, 32:, :32] = 0.25  # per-image masks differ
    masked = set_mask(host, host.conditioning(arch, 3), mask, strength=0.8)
    return full + area + masked


@pytest.mark.parametrize("batch,mask_batch", [(1, 1), (2, 2)])
def test_area_and_mask_conds(host, arch, base, batch, mask_batch):
    pos, neg = regional_positive(host, arch, mask_batch), host.conditioning(arch, 101)
    out = sample(host, stylestudio(host, base, arch), arch, batch=batch, cfg=CFG, positive=pos, negative=neg)
    assert out.shape[0] == 2 * batch and torch.isfinite(out).all()
    plain = sample(host, base, arch, batch=batch, cfg=CFG, positive=pos, negative=neg)
    assert_close_numerics(out[batch:], plain)
    # the regional conds take part (else the check above says nothing about them)
    assert_differs(plain, sample(host, base, arch, batch=batch, cfg=CFG, positive=pos[:1], negative=neg))
    # dropping the teacher after its window leaves the students as they are
    dropped = sample(host, stylestudio(host, base, arch, return_teacher=False), arch, batch=batch, cfg=CFG,
                     positive=pos, negative=neg)
    assert dropped.shape[0] == batch
    assert_close_numerics(dropped, out[:batch])


def test_area_conds_with_split_chunks(host, arch, base):
    model = stylestudio(host, base, arch)
    pos, neg = regional_positive(host, arch), host.conditioning(arch, 101)
    batched = sample(host, model, arch, cfg=CFG, positive=pos, negative=neg)
    with host.force_split():
        split = sample(host, model, arch, cfg=CFG, positive=pos, negative=neg)
    assert_close_numerics(split, batched)


# ---------------------------------------------------------------------------------------------------------
# 2. ControlNet: real host only
# ---------------------------------------------------------------------------------------------------------
_CONTROLNETS: dict = {}


def tiny_controlnet(host, arch):
    """A comfy.controlnet.ControlNet around a comfy.cldm.cldm.ControlNet with the tiny UNet's own config (what
    ComfyUI's loader builds for a ControlNet of that UNet), every weight initialised from a fixed seed; the
    zero convs are NOT zero (N(0, 1/fan_in)), so the ControlNet changes the output."""
    if arch not in _CONTROLNETS:
        import comfy.cldm.cldm
        import comfy.controlnet
        import comfy.ops
        from hosts import _tiny_weights as tw
        config = dict(host.tiny_model(arch).model.model_config.unet_config)
        config.pop("out_channels")
        config.update(hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=torch.float32,
                      device=torch.device("cpu"))
        control_model = comfy.cldm.cldm.ControlNet(**config)
        tw.init_weights_(control_model, seed=555)
        assert all(zc[0].weight.abs().sum() > 0 for zc in control_model.zero_convs)
        _CONTROLNETS[arch] = comfy.controlnet.ControlNet(control_model, load_device=torch.device("cpu"),
                                                         manual_cast_dtype=None)
    return _CONTROLNETS[arch]


def hint_image(batch):
    """IMAGE (B, H, W, C) in [0, 1]; image i is the same whatever the batch size."""
    return torch.cat([torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(7 + i)) for i in range(batch)])


def apply_controlnet(host, arch, positive, negative, image, strength=0.5, start=0.0, end=1.0):
    import nodes
    with torch.inference_mode():  # as the executor runs every node
        return nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, tiny_controlnet(host, arch),
                                                                image, strength, start, end)


@pytest.mark.parametrize("hint_batch", [1, BATCH])
def test_controlnet(host, arch, base, hint_batch):
    real_host_only(host, "ControlNet")
    pos0, neg0 = host.conditioning(arch, 1), host.conditioning(arch, 101)
    pos, neg = apply_controlnet(host, arch, pos0, neg0, hint_image(hint_batch))
    model = stylestudio(host, base, arch)
    out = sample(host, model, arch, batch=BATCH, cfg=CFG, positive=pos, negative=neg)
    assert out.shape[0] == 2 * BATCH and torch.isfinite(out).all()
    plain = sample(host, base, arch, batch=BATCH, cfg=CFG, positive=pos, negative=neg)
    assert_close_numerics(out[BATCH:], plain)
    # the ControlNet has an effect, on the plain run and on the stylised images
    assert_differs(plain, sample(host, base, arch, batch=BATCH, cfg=CFG, positive=pos0, negative=neg0))
    assert_differs(out[:BATCH], sample(host, model, arch, batch=BATCH, cfg=CFG, positive=pos0, negative=neg0)[:BATCH])
    assert_differs(out[:BATCH], out[BATCH:])  # the style reaches the students
    if hint_batch > 1:  # per-image hints reach the right rows: image 0 has hint 0 as with a single hint, image 1 not
        pos1, neg1 = apply_controlnet(host, arch, pos0, neg0, hint_image(1))
        single = sample(host, model, arch, batch=BATCH, cfg=CFG, positive=pos1, negative=neg1)
        assert_close_numerics(out[[0, BATCH]], single[[0, BATCH]])
        assert_differs(out[[1, BATCH + 1]], single[[1, BATCH + 1]])
        with host.force_split():  # one chunk per forward: the hints are broadcast per chunk instead
            assert_close_numerics(sample(host, model, arch, batch=BATCH, cfg=CFG, positive=pos, negative=neg), out)
    # the teacher dropped after its window: the hints are re-broadcast to the smaller batch, students unchanged
    dropped = sample(host, stylestudio(host, base, arch, return_teacher=False), arch, batch=BATCH, cfg=CFG,
                     positive=pos, negative=neg)
    assert dropped.shape[0] == BATCH
    assert_close_numerics(dropped, out[:BATCH])


def test_controlnet_with_a_window_and_area_conds(host, arch, base):
    real_host_only(host, "ControlNet")
    pos, neg = apply_controlnet(host, arch, regional_positive(host, arch), host.conditioning(arch, 101),
                                hint_image(1), start=0.0, end=0.5)
    out = sample(host, stylestudio(host, base, arch), arch, cfg=CFG, positive=pos, negative=neg)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    assert_close_numerics(out[1:], sample(host, base, arch, cfg=CFG, positive=pos, negative=neg))


# ---------------------------------------------------------------------------------------------------------
# 3. Other sampling patches: real host only
# ---------------------------------------------------------------------------------------------------------
def patch_node(host, name, model, *args):
    """Apply ComfyUI's node ``name`` (V1 or V3) to ``model``; skip when this ComfyUI has no such node."""
    real_host_only(host, name)
    import nodes
    cls = nodes.NODE_CLASS_MAPPINGS.get(name)
    if cls is None:
        pytest.skip(f"this ComfyUI has no {name} node")
    with torch.inference_mode():
        if hasattr(cls, "define_schema"):  # V3 (comfy_api io.ComfyNode)
            return cls.execute(model, *args)[0]
        return getattr(cls(), cls.FUNCTION)(model, *args)[0]


PATCHES = {
    "PAG": ("PerturbedAttentionGuidance", (3.0,)),      # post-cfg with its own calc_cond_batch call
    "RescaleCFG": ("RescaleCFG", (0.7,)),               # sampler_cfg_function
    "CFGZeroStar": ("CFGZeroStar", ()),                 # post-cfg
}


def patch_latent(host, arch, patch):
    """PAG perturbs the middle block's self-attention, which at 64 px is 1x1 on SD1.5 (one token: attention
    returns v exactly, so PAG would be a no-op); 128 px gives it 2x2 there. SDXL's middle block is 2x2 at 64 px."""
    size = 128 if patch == "PAG" and arch == "sd15" else 64
    return host.empty_latent(arch, batch=BATCH, size=size)


@pytest.mark.parametrize("patch", list(PATCHES))
def test_other_sampling_patches_in_either_order(host, arch, base, patch):
    name, args = PATCHES[patch]
    real_host_only(host, name)

    def run(model):
        return sample(host, model, arch, cfg=CFG, latent=patch_latent(host, arch, patch))

    patched_base = patch_node(host, name, base, *args)
    after = patch_node(host, name, stylestudio(host, base, arch), *args)   # StyleStudio -> patch
    before = stylestudio(host, patched_base, arch)                         # patch -> StyleStudio
    a, b = run(after), run(before)
    assert a.shape[0] == b.shape[0] == 2 * BATCH and torch.isfinite(a).all() and torch.isfinite(b).all()
    plain = run(patched_base)
    assert_close_numerics(a[BATCH:], plain)
    assert_close_numerics(b[BATCH:], plain)
    assert_close_numerics(a, b)  # StyleStudio's post-cfg goes first in the chain whatever the wiring order
    # the patch has an effect, on the plain run and on the stylised images
    assert_differs(plain, run(base))
    assert_differs(a[:BATCH], run(stylestudio(host, base, arch))[:BATCH])
    if patch == "PAG":  # PAG's extra model call after the teacher is dropped
        dropped = run(patch_node(host, name, stylestudio(host, base, arch, return_teacher=False), *args))
        assert dropped.shape[0] == BATCH
        assert_close_numerics(dropped, a[:BATCH])


def test_pag_scale_zero_is_bit_identical(host, arch, base):
    real_host_only(host, "PerturbedAttentionGuidance")

    def run(model):
        return sample(host, model, arch, cfg=CFG, latent=patch_latent(host, arch, "PAG"))

    model = stylestudio(host, base, arch)
    without = run(model)
    assert torch.equal(run(patch_node(host, "PerturbedAttentionGuidance", model, 0.0)), without)
    assert torch.equal(run(stylestudio(host, patch_node(host, "PerturbedAttentionGuidance", base, 0.0), arch)),
                       without)


# ---------------------------------------------------------------------------------------------------------
# 4. SamplerCustomAdvanced: real host only
# ---------------------------------------------------------------------------------------------------------
def _node(name, *args):
    import nodes
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    return getattr(cls(), cls.FUNCTION)(*args)


def custom_advanced(model, guider_args, latent, *, guider="CFGGuider", seed=0, steps=4, sampler_name="euler",
                    scheduler="normal"):
    """RandomNoise + <guider> + KSamplerSelect + BasicScheduler -> SamplerCustomAdvanced, the real node classes.
    Returns (output, denoised_output) sample tensors."""
    with torch.inference_mode():
        noise = _node("RandomNoise", seed)[0]
        g = _node(guider, model, *guider_args)[0]
        sampler = _node("KSamplerSelect", sampler_name)[0]
        sigmas = _node("BasicScheduler", model, scheduler, steps, 1.0)[0]
        out, denoised = _node("SamplerCustomAdvanced", noise, g, sampler, sigmas, latent)
    return out["samples"].clone(), denoised["samples"].clone()


@pytest.mark.parametrize("sampler_name", ["euler", "euler_ancestral"])
def test_sampler_custom_advanced_equals_ksampler(host, arch, base, sampler_name):
    real_host_only(host, "SamplerCustomAdvanced / CFGGuider nodes")
    model = stylestudio(host, base, arch)
    pos, neg = host.conditioning(arch, 1), host.conditioning(arch, 101)
    out, denoised = custom_advanced(model, (pos, neg, CFG), host.empty_latent(arch, batch=BATCH), seed=3,
                                    sampler_name=sampler_name)
    assert out.shape[0] == 2 * BATCH and torch.isfinite(out).all() and torch.isfinite(denoised).all()
    ks = sample(host, model, arch, batch=BATCH, cfg=CFG, positive=pos, negative=neg, seed=3,
                sampler_name=sampler_name)
    assert_close_numerics(out, ks)
    # denoised_output (x0 of the last step, from the preview callback) has the same rows as the output
    # ([students | teachers] with return_teacher); with Euler's last step to sigma 0 it equals the output
    assert denoised.shape[0] == 2 * BATCH
    if sampler_name == "euler":
        assert_close_numerics(denoised, out)
    assert_close_numerics(out[BATCH:], sample(host, base, arch, batch=BATCH, cfg=CFG, positive=pos, negative=neg,
                                              seed=3, sampler_name=sampler_name))


@pytest.mark.parametrize("style", ["regular", "nested"])
def test_dual_cfg_guider_runs(host, arch, base, style):
    real_host_only(host, "DualCFGGuider node")
    import nodes
    if "DualCFGGuider" not in nodes.NODE_CLASS_MAPPINGS:
        pytest.skip("this ComfyUI has no DualCFGGuider node")
    cond1, cond2, neg = host.conditioning(arch, 1), host.conditioning(arch, 2), host.conditioning(arch, 101)
    args = (cond1, cond2, neg, CFG, 3.0, style)
    out, _ = custom_advanced(stylestudio(host, base, arch), args, host.empty_latent(arch, batch=BATCH),
                             guider="DualCFGGuider")
    assert out.shape[0] == 2 * BATCH and torch.isfinite(out).all()
    plain, _ = custom_advanced(base, args, host.empty_latent(arch, batch=BATCH), guider="DualCFGGuider")
    assert_close_numerics(out[BATCH:], plain)
