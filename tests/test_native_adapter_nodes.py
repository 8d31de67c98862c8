"""Native style adapters (issue 13) in sampling, both tiers: the apply node against a reference attention, effect
off, memory on clone, model management, stacking with IPAdapter_plus in either order, the StyleStudio features
(AdaIN, Teacher Layout, Style Guidance) on the native path, and -- host tier -- parity with IPAdapter_plus on the
same file, image and CLIP vision."""
from __future__ import annotations

import os

import pytest
import torch

from helpers import adain, assert_close_numerics, guidance, run_node, teacher
from hosts import _tiny_weights as tw
from test_native_adapter_support import (APPLY, apply, attn2_slots, clip_vision, close, image, load,
                                         reference_ip_attention, reference_tokens, sample, state_dict_of,
                                         write_adapter)

ADDITIONAL_KEY = "stylestudio_style_adapter"


def _csgo(host):
    return load(host, write_adapter(host, "csgo", "sdxl"))


def _core(host, module):
    return getattr(host.pack().stylestudio_core, module)


# ------------------------------------------------------------------------------------------ effect off
@pytest.mark.parametrize("how", ["weight0", "empty_window", "zero_mask"])
def test_effect_off_is_bit_identical(host, arch, how):
    fmt = "csgo" if arch == "sdxl" else "ip_adapter_plus"
    adapter = load(host, write_adapter(host, fmt, arch))
    base = host.tiny_model(arch)
    kw = {"weight0": {"weight": 0.0}, "empty_window": {"start_at": 0.5, "end_at": 0.5},
          "zero_mask": {"mask": torch.zeros(1, 64, 64)}}[how]
    m = apply(host, base, adapter, **kw)
    if how != "zero_mask":
        assert not attn2_slots(m) and not m.get_additional_models_with_key(ADDITIONAL_KEY)
    assert torch.equal(sample(host, m, arch), sample(host, base, arch))


# ----------------------------------------------------------------------------------- against a reference
def _reference_model(host, model, fmt, arch, sd, img, negative, weight, layers):
    """The adapter as a plain attn2 replace written from method.md: out = T + w·Attn(Q, K_ip, V_ip), uncond tokens
    for chunks whose cond_or_uncond entry is 1."""
    from comfy.ldm.modules.attention import optimized_attention
    cond, uncond = reference_tokens(host, fmt, sd, img, negative)
    m = model.clone()

    def make(module_key):
        def attn2(q, k, v, extra_options):
            heads = extra_options["n_heads"]
            chunks = extra_options["cond_or_uncond"]
            per = q.shape[0] // len(chunks)
            text = optimized_attention(q, k, v, heads)
            rows = []
            for i, c in enumerate(chunks):
                tokens = uncond if c == 1 else cond
                rows.append(reference_ip_attention(q[i * per:(i + 1) * per], tokens, sd, module_key, heads))
            return (text.float() + weight * torch.cat(rows)).to(q.dtype)
        return attn2
    for layer in layers:
        m.set_model_attn2_replace(make(layer.module_key), *layer.patch_key)
    return m


@pytest.mark.parametrize("fmt,arch,blocks", [("csgo", "sdxl", "up"), ("ip_adapter", "sd15", "style"),
                                              ("ip_adapter_plus", "sdxl", "all")])
@pytest.mark.parametrize("negative", [False, True])
def test_sampling_matches_the_reference_attention(host, fmt, arch, blocks, negative):
    """cfg 5 and a latent batch of 2: cond rows get the style tokens, uncond rows the unconditional (or the
    negative image's) tokens, every latent row the same tokens."""
    name = write_adapter(host, fmt, arch)
    adapter, sd = load(host, name), state_dict_of(name)
    img, neg = image(7, 64, 80), (image(8) if negative else None)
    native = apply(host, host.tiny_model(arch), adapter, img, weight=0.8, blocks=blocks, negative=neg)
    layers = adapter.spec.layers_for(blocks)
    ref = _reference_model(host, host.tiny_model(arch), fmt, arch, sd, img, neg, 0.8, layers)
    expected = sample(host, ref, arch, batch=2)
    assert_close_numerics(sample(host, native, arch, batch=2), expected, rel=1e-5)
    assert not torch.allclose(expected, sample(host, host.tiny_model(arch), arch, batch=2))


def test_window_and_split_chunks(host):
    adapter = _csgo(host)
    img = image(2)
    m = apply(host, host.tiny_model("sdxl"), adapter, img, start_at=0.3, end_at=0.7)
    together = sample(host, m, "sdxl", steps=4)
    with host.force_split():
        split = sample(host, m, "sdxl", steps=4)
    assert_close_numerics(split, together)
    full = sample(host, apply(host, host.tiny_model("sdxl"), adapter, img), "sdxl", steps=4)
    assert not torch.allclose(together, full) and not torch.allclose(together, sample(host, host.tiny_model("sdxl"),
                                                                                       "sdxl", steps=4))
    assert torch.equal(together, sample(host, m, "sdxl", steps=4))  # no state carried between runs


# --------------------------------------------------------------------------------------------- memory
def _storages(obj, seen=None, out=None):
    seen = set() if seen is None else seen
    out = {} if out is None else out
    if id(obj) in seen:
        return out
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        out[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
    elif isinstance(obj, torch.nn.Module):
        for t in list(obj.parameters()) + list(obj.buffers()):
            _storages(t, seen, out)
    elif isinstance(obj, dict):
        for v in obj.values():
            _storages(v, seen, out)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            _storages(v, seen, out)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and not callable(obj) or hasattr(obj, "kwargs"):
        _storages(vars(obj), seen, out)
    return out


@pytest.mark.parametrize("ipadapter_first", [False, True])
def test_cloning_the_model_does_not_copy_the_adapter(host, ipadapter_first):
    adapter = _csgo(host)
    model = host.tiny_model("sdxl")
    if ipadapter_first:  # our callbacks then live inside IPAdapter_plus's own patch objects
        model = host.apply_ipadapter(model, arch="sdxl", weight_type="style transfer")
    m = apply(host, model, adapter)
    before = _storages(m.model_options)
    clone = m.clone()
    after = _storages(clone.model_options)
    ours = [kw for obj in attn2_slots(clone).values() for kw in obj.kwargs if kw.get("stylestudio_role")]
    assert ours and all(kw["adapter"] is adapter for kw in ours)
    new_bytes = sum(n for ptr, n in after.items() if ptr not in before)
    assert sum(n for ptr, n in after.items() if ptr in _storages(adapter.weights)) == adapter.nbytes()
    if not ipadapter_first:
        assert new_bytes == 0, new_bytes
    else:  # IPAdapter_plus deep-copies its own objects (their tokens and module), never ours
        adapter_ptrs = set(_storages(adapter.weights))
        assert adapter_ptrs <= set(after) and adapter_ptrs <= set(before)


def test_adapter_weights_are_loaded_by_model_management_with_the_model(host):
    import comfy.model_management as mm
    adapter = _csgo(host)
    m = apply(host, host.tiny_model("sdxl"), adapter)
    (patcher,) = m.get_additional_models_with_key(ADDITIONAL_KEY)
    assert patcher.model is adapter.weights
    stacked = apply(host, m, adapter, image(9))  # the same adapter twice: registered once
    assert len(stacked.get_additional_models_with_key(ADDITIONAL_KEY)) == 1
    clone = stacked.clone()
    assert clone.get_additional_models_with_key(ADDITIONAL_KEY)[0].model is adapter.weights
    sample(host, clone, "sdxl", steps=1)
    assert any(getattr(x, "model", None) is adapter.weights for x in mm.loaded_models())


# ------------------------------------------------------------------------------- stacking with IPAdapter_plus
@pytest.mark.parametrize("weight_type", ["composition", "style transfer"])
def test_stacks_with_ipadapter_in_either_order(host, weight_type):
    """CSGO style (up blocks) + an IPAdapter_plus adapter on the same model; with "style transfer" both packs share
    the output-block-1 slots (each .adds to the other's object)."""
    adapter = _csgo(host)
    img = image(10)
    base = host.tiny_model("sdxl")
    native_first = host.apply_ipadapter(apply(host, base, adapter, img), arch="sdxl", weight_type=weight_type)
    ipa_first = apply(host, host.apply_ipadapter(base, arch="sdxl", weight_type=weight_type), adapter, img)
    for m in (native_first, ipa_first):
        slot = attn2_slots(m)[("output", 1, 0)]
        assert len(slot.callback) == 2 and len(slot.kwargs) == 2
    assert type(attn2_slots(native_first)[("output", 1, 0)]).__name__ == "StyleAdapterAttn2"
    assert type(attn2_slots(ipa_first)[("output", 1, 0)]).__name__ == "Attn2Replace"
    a, b = sample(host, native_first, "sdxl"), sample(host, ipa_first, "sdxl")
    assert_close_numerics(a, b)
    only_native = sample(host, apply(host, base, adapter, img), "sdxl")
    only_ipa = sample(host, host.apply_ipadapter(base, arch="sdxl", weight_type=weight_type), "sdxl")
    assert not torch.allclose(a, only_native) and not torch.allclose(a, only_ipa)


def test_applied_after_ipadapter_it_neither_copies_nor_changes_the_input_models_adapter(host):
    """The apply node clones without deep-copying IPAdapter_plus's patches (whose kwargs hold its whole module),
    and the slot it stacks into is its own copy: the input model keeps exactly its one callback per slot."""
    ipa = host.apply_ipadapter(host.tiny_model("sdxl"), arch="sdxl", weight_type="style transfer")
    before = {k: len(v.callback) for k, v in attn2_slots(ipa).items()}
    out = apply(host, ipa, _csgo(host), image(10))
    assert {k: len(v.callback) for k, v in attn2_slots(ipa).items()} == before
    theirs, ours = attn2_slots(ipa)[("output", 1, 0)], attn2_slots(out)[("output", 1, 0)]
    assert ours is not theirs and len(ours.callback) == before[("output", 1, 0)] + 1
    # every tensor of the IPAdapter_plus callback's kwargs is the same storage, not a copy
    for name, value in theirs.kwargs[0].items():
        if isinstance(value, torch.Tensor):
            assert ours.kwargs[0][name].data_ptr() == value.data_ptr(), name
        elif isinstance(value, torch.nn.Module):
            assert ours.kwargs[0][name] is value, name


def test_weight_zero_with_adain_gives_the_text_only_result(host):
    """Switching the native style off (weight 0) while AdaIN / Style Guidance stay on the model is not an error:
    there is no style to fuse, so the result is the plain model's."""
    base = host.tiny_model("sdxl")
    off = apply(host, base, _csgo(host), weight=0.0)
    assert torch.equal(sample(host, adain(host, off), "sdxl"), sample(host, base, "sdxl"))
    assert torch.equal(sample(host, guidance(host, off, style_cfg=9.0), "sdxl"), sample(host, base, "sdxl"))


# ------------------------------------------------------------------------------ StyleStudio on the native path
def test_adain_statistics_on_the_native_path(host):
    """method.md fact 1 in a native-adapter layer: per row and channel, the token mean/std of the routed output
    equal those of the style term S = w·Attn(Q, K_ip, V_ip)."""
    from comfy.ldm.modules.attention import optimized_attention
    routing = _core(host, "routing")
    name = write_adapter(host, "csgo", "sdxl")
    adapter, sd = load(host, name), state_dict_of(name)
    img = image(11)
    m = apply(host, host.tiny_model("sdxl"), adapter, img, weight=0.7)
    slot = attn2_slots(m)[("output", 1, 0)]
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(4, 64, 128, generator=g), torch.randn(4, 8, 128, generator=g), torch.randn(4, 8, 128, generator=g)
    eo = {"n_heads": 4, "cond_or_uncond": [1, 0], "sigmas": torch.tensor([5.0] * 4), "original_shape": [4, 4, 8, 8]}
    out = routing.IPRoute(slot, routing.CallPlan(adain_strength=1.0), optimized_attention)(q, k, v, eo)
    cond, uncond = reference_tokens(host, "csgo", sd, img)
    s = 0.7 * torch.cat([reference_ip_attention(q[:2], uncond, sd, "69", 4),
                         reference_ip_attention(q[2:], cond, sd, "69", 4)])
    close(out.mean(dim=1), s.mean(dim=1), rel=1e-4)
    close(out.std(dim=1), s.std(dim=1), rel=1e-4)
    plain = slot(q, k, v, eo)  # without StyleStudio: text + S
    close(plain, optimized_attention(q, k, v, 4) + s, rel=1e-5)


def test_adain_teacher_and_guidance_work_on_the_native_path(host):
    adapter = _csgo(host)
    img = image(12)
    styled = apply(host, host.tiny_model("sdxl"), adapter, img)
    plain = sample(host, styled, "sdxl")
    assert not torch.allclose(sample(host, adain(host, styled), "sdxl"), plain)
    assert not torch.allclose(sample(host, teacher(host, styled, end_at=0.5), "sdxl"), plain)
    # the teacher rows never receive style: the returned teacher equals the unstyled model's sample
    both = sample(host, teacher(host, styled, end_at=0.5, return_teacher=True), "sdxl")
    assert_close_numerics(both[1:], sample(host, host.tiny_model("sdxl"), "sdxl"))


def test_style_guidance_uses_the_negative_style_tokens(host):
    adapter = _csgo(host)
    img = image(13)
    neg = apply(host, host.tiny_model("sdxl"), adapter, img, negative=image(14))
    # style_cfg = cfg: the paper's SCFG, no extra evaluation, identical to no guidance node
    assert torch.equal(sample(host, guidance(host, neg, style_cfg=5.0), "sdxl"), sample(host, neg, "sdxl"))
    # a different style scale moves the result along ε(t, s⁺) − ε(t, s⁻) ...
    assert not torch.allclose(sample(host, guidance(host, neg, style_cfg=9.0), "sdxl"), sample(host, neg, "sdxl"))
    # ... which vanishes when the negative style is the style itself (the extra branch really gets s⁻)
    same = apply(host, host.tiny_model("sdxl"), adapter, img, negative=img)
    assert_close_numerics(sample(host, guidance(host, same, style_cfg=9.0), "sdxl"), sample(host, same, "sdxl"))


# ------------------------------------------------------------------------------------------------ errors
def test_bad_inputs_are_clear_errors(host):
    err = host.pack().nodes.apply_style_adapter.StyleStudioError
    adapter = _csgo(host)
    cv, img = clip_vision(host), image(1)

    def run(model, adapter, blocks="up", start_at=0.0, end_at=1.0):
        return run_node(host, APPLY, model=model, style_adapter=adapter, clip_vision=cv, image=img, weight=1.0,
                        blocks=blocks, start_at=start_at, end_at=end_at)
    with pytest.raises(err, match="Apply Style Adapter.*not a UNet"):
        run(host.non_unet_model(), adapter)
    with pytest.raises(err, match="end_at"):
        run(host.tiny_model("sdxl"), adapter, start_at=0.6, end_at=0.2)
    with pytest.raises(err, match="blocks"):
        run(host.tiny_model("sdxl"), adapter, blocks="down")
    with pytest.raises(err, match="style_adapter"):
        run(host.tiny_model("sdxl"), object())


# ------------------------------------------------------------------------ parity with IPAdapter_plus (host)
@pytest.mark.parametrize("arch", ["sdxl", "sd15"])
def test_native_ip_adapter_equals_ipadapter_plus_style_transfer(host, arch):
    if not host.real_ipadapter:
        pytest.skip("needs the real ComfyUI_IPAdapter_plus (host tier with IPADAPTER_PLUS_PATH)")
    import nodes
    name = write_adapter(host, "ip_adapter", arch, seed=21)
    img = image(15, 72, 64)
    with torch.inference_mode():
        ipadapter = nodes.NODE_CLASS_MAPPINGS["IPAdapterModelLoader"]().load_ipadapter_model(name)[0]
        theirs = nodes.NODE_CLASS_MAPPINGS["IPAdapterAdvanced"]().apply_ipadapter(
            host.tiny_model(arch), ipadapter, start_at=0.0, end_at=1.0, weight=0.9, weight_type="style transfer",
            image=img, clip_vision=clip_vision(host))[0]
    ours = apply(host, host.tiny_model(arch), load(host, name), img, weight=0.9, blocks="style")
    expected = sample(host, theirs, arch, cfg=1.0)
    close(sample(host, ours, arch, cfg=1.0), expected, rel=1e-5)
    assert not torch.allclose(expected, sample(host, host.tiny_model(arch), arch, cfg=1.0))


def test_native_plus_at_full_resampler_widths_equals_ipadapter_plus(host):
    """IPAdapter_plus hard-codes the SDXL Plus Resampler (width 1280, 20 heads, depth 4, 16 tokens): a file with
    exactly those sizes (tiny per-layer widths) goes through both packs; cfg 1, so only the style tokens count."""
    if not host.real_ipadapter:
        pytest.skip("needs the real ComfyUI_IPAdapter_plus (host tier with IPADAPTER_PLUS_PATH)")
    import nodes
    name = write_adapter(host, "ip_adapter_plus", "sdxl", resampler_dim=1280, resampler_heads=20, resampler_depth=4,
                         tokens=16, feature_dim=32, seed=23)
    img = image(16)
    with torch.inference_mode():
        ipadapter = nodes.NODE_CLASS_MAPPINGS["IPAdapterModelLoader"]().load_ipadapter_model(name)[0]
        theirs = nodes.NODE_CLASS_MAPPINGS["IPAdapterAdvanced"]().apply_ipadapter(
            host.tiny_model("sdxl"), ipadapter, start_at=0.0, end_at=1.0, weight=1.0, weight_type="style transfer",
            image=img, clip_vision=clip_vision(host))[0]
    ours = apply(host, host.tiny_model("sdxl"), load(host, name), img, blocks="style")
    close(sample(host, ours, "sdxl", cfg=1.0), sample(host, theirs, "sdxl", cfg=1.0), rel=1e-5)


# ------------------------------------------------------------------------------------ the shipped workflow
@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="host tier: runs the workflow through the CLI")
def test_csgo_workflow_runs_end_to_end_with_tiny_models(host, tmp_path, capsys):
    """workflows/stylestudio_csgo.json through `stylestudio run` on the real ComfyUI (no IPAdapter_plus node in
    it): tiny checkpoint / text encoder / CLIP vision substituted, a tiny CSGO file under the real name."""
    import importlib.util
    import sys
    from pathlib import Path

    import folder_paths
    import nodes
    repo = Path(__file__).resolve().parents[1]
    if "stylestudio_cli" not in sys.modules:
        spec = importlib.util.spec_from_file_location("stylestudio_cli", repo / "stylestudio_cli" / "__init__.py",
                                                      submodule_search_locations=[str(repo / "stylestudio_cli")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["stylestudio_cli"] = module
        spec.loader.exec_module(module)
    from PIL import Image
    from stylestudio_cli.__main__ import main

    class _TinyVAE:
        def decode(self, samples):
            return torch.sigmoid(torch.nn.functional.interpolate(samples[:, :3].float(), scale_factor=8)).movedim(1, -1)

    def node_class(returns, fn, inputs=None):
        return type("_T", (), {"INPUT_TYPES": classmethod(lambda cls: {"required": inputs or {}}),
                               "RETURN_TYPES": returns, "FUNCTION": "run", "CATEGORY": "_test",
                               "run": lambda self, **kw: fn(**kw)})
    new = {"_TestTinyCheckpoint": node_class(("MODEL", "CLIP", "VAE"),
                                             lambda: (host.tiny_model("sdxl"), object(), _TinyVAE())),
           "_TestTinyTextEncode": node_class(("CONDITIONING",), lambda text, clip: (host.conditioning("sdxl", len(text)),),
                                             {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}),
           "_TestTinyClipVision": node_class(("CLIP_VISION",), lambda: (clip_vision(host),))}
    nodes.NODE_CLASS_MAPPINGS.update(new)
    ipa_dir = tmp_path / "ipadapter"
    tw.write_state_dict(str(ipa_dir / "csgo_4_32.bin"), tw.random_style_adapter_state_dict("csgo", "sdxl", 32, depth=1))
    folder_paths.add_model_folder_path("ipadapter", str(ipa_dir))
    inp = tmp_path / "input"
    inp.mkdir()
    Image.new("RGB", (96, 80), (180, 90, 40)).save(inp / "stylestudio_style.png")
    out = tmp_path / "out"
    try:
        rc = main(["run", str(repo / "workflows" / "stylestudio_csgo.json"), "--comfyui", os.environ["COMFYUI_PATH"],
                   "--input-dir", str(inp), "--out", str(out),
                   "--set", "Load Checkpoint.class_type=_TestTinyCheckpoint",
                   "--set", "Positive prompt.class_type=_TestTinyTextEncode",
                   "--set", "Negative prompt.class_type=_TestTinyTextEncode",
                   "--set", "Load CLIP Vision (ViT-bigG).class_type=_TestTinyClipVision",
                   "--set", "KSampler.steps=3", "--set", "EmptyLatentImage.width=64",
                   "--set", "EmptyLatentImage.height=64"])
    finally:
        for k in new:
            nodes.NODE_CLASS_MAPPINGS.pop(k, None)
        folder_paths.folder_names_and_paths["ipadapter"][0].remove(str(ipa_dir))
        getattr(folder_paths, "filename_list_cache", {}).pop("ipadapter", None)
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    assert len(sorted(out.rglob("*.png"))) == 1, captured.out
