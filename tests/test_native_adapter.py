"""Native style adapters (issue 13), loader and projector level, both tiers: format detection from key names and
shapes, every dimension from the weights, refusals with clear errors, corrupt files, the block mapping per base
model, and the projectors / unconditional tokens against references written here from the published designs."""
from __future__ import annotations

import os

import pytest
import torch

from hosts import _tiny_weights as tw
from test_native_adapter_support import (CTX, LOADER, apply, attn2_slots, clip_vision, close, image,
                                         ipadapter_folder, load, reference_linear_projector, reference_resampler,
                                         reference_tokens, state_dict_of, write_adapter)

FORMATS = [("csgo", "sdxl"), ("ip_adapter", "sdxl"), ("ip_adapter", "sd15"), ("ip_adapter_plus", "sdxl"),
           ("ip_adapter_plus", "sd15")]
N_LAYERS = {"sdxl": 70, "sd15": 16}


def _error(host):
    return host.pack().nodes.style_adapter_loader.StyleStudioError


@pytest.mark.parametrize("fmt,arch", FORMATS)
def test_loader_detects_each_format_and_reads_dims_from_the_weights(host, fmt, arch):
    name = write_adapter(host, fmt, arch, tokens=8 if fmt != "ip_adapter" else 3, resampler_heads=3,
                         resampler_depth=3, resampler_dim=96, feature_dim=32 if fmt != "ip_adapter" else 24)
    spec = load(host, name).spec
    assert (spec.format, spec.base, spec.context_dim) == (fmt, arch, CTX[arch])
    assert spec.tokens == (3 if fmt == "ip_adapter" else 8)
    assert spec.feature == ("image_embeds" if fmt == "ip_adapter" else "penultimate_hidden_states")
    assert spec.feature_dim == (24 if fmt == "ip_adapter" else 32)
    if fmt != "ip_adapter":
        assert spec.resampler["heads"] == 3 and spec.resampler["depth"] == 3 and spec.resampler["dim"] == 96
    sd = state_dict_of(name)
    file_layers = {k.split(".")[1] for k in sd if k.startswith("ip_adapter.")}
    if fmt == "csgo":
        # only the up-block layers carry style; the down-block (content) layers are ignored
        assert len(file_layers) == 60 and len(spec.layer_widths) == 36
        assert {layer.block for layer in spec.layers()} == {"output"}
    else:
        assert len(spec.layer_widths) == N_LAYERS[arch] == len(file_layers)
    for key, width in spec.layer_widths.items():
        assert width == sd[f"ip_adapter.{key}.to_k_ip.weight"].shape[0]


def test_bin_files_load_through_weights_only_torch_load(host):
    sd = tw.random_style_adapter_state_dict("csgo", "sdxl", 32, depth=1, seed=3)
    a = load(host, write_adapter(host, "csgo", "sdxl", name="tiny_csgo.bin", sd=sd))
    b = load(host, write_adapter(host, "csgo", "sdxl", name="tiny_csgo_same.safetensors", sd=sd))
    f = torch.randn(1, 257, 32)
    torch.testing.assert_close(a.project(f), b.project(f), rtol=0, atol=0)


@pytest.mark.parametrize("blocks", ["style", "up", "all"])
def test_block_mapping_per_base_model(host, blocks):
    xl = load(host, write_adapter(host, "ip_adapter", "sdxl")).spec.layers_for(blocks)
    sd15 = load(host, write_adapter(host, "ip_adapter", "sd15")).spec.layers_for(blocks)
    csgo = load(host, write_adapter(host, "csgo", "sdxl")).spec.layers_for(blocks)
    if blocks == "style":
        assert {layer.patch_key for layer in xl} == {("output", 1, i) for i in range(10)}
        assert {layer.transformer_index for layer in xl} == {6}
        # SD1.5: exactly IPAdapter_plus's "style transfer" layers (transformer_index 0-3, 9-15)
        assert sorted(layer.transformer_index for layer in sd15) == [0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15]
        assert {layer.patch_key for layer in sd15} == ({("input", i) for i in (1, 2, 4, 5)}
                                                       | {("output", i) for i in range(5, 12)})
        assert {layer.patch_key for layer in csgo} == {("output", 1, i) for i in range(10)}
    elif blocks == "up":
        assert len(xl) == 36 and {layer.block for layer in xl} == {"output"}
        assert {layer.patch_key for layer in sd15} == {("output", i) for i in range(3, 12)}
        assert [layer.module_key for layer in csgo] == [str(2 * n + 1) for n in range(24, 60)]
    else:
        assert len(xl) == 70 and ("middle", 0, 0) in {layer.patch_key for layer in xl}  # ComfyUI's middle id 0
        assert len(sd15) == 16 and ("middle", 0) in {layer.patch_key for layer in sd15}
        assert [layer.patch_key for layer in csgo] == [layer.patch_key for layer in
                                                       load(host, write_adapter(host, "csgo", "sdxl")).spec.layers_for("up")]


def _refusal_cases():
    base = tw.random_style_adapter_state_dict("ip_adapter", "sd15", 32, seed=1)
    plus = tw.random_style_adapter_state_dict("ip_adapter_plus", "sdxl", 32, depth=1, seed=1)
    faceid = dict(base)
    faceid["ip_adapter.0.to_q_lora.down.weight"] = torch.zeros(4, 4, dtype=torch.float16)
    portrait = {k: v for k, v in base.items() if not k.startswith("image_proj.")}
    portrait.update({"image_proj.proj.0.weight": torch.zeros(8, 512), "image_proj.proj.0.bias": torch.zeros(8),
                     "image_proj.proj.2.weight": torch.zeros(768 * 4, 8), "image_proj.proj.2.bias": torch.zeros(768 * 4),
                     "image_proj.norm.weight": torch.ones(768), "image_proj.norm.bias": torch.zeros(768)})
    fullface = dict(portrait)
    fullface["image_proj.proj.3.weight"] = torch.ones(768)
    kolors = tw.random_style_adapter_state_dict("ip_adapter_plus", "sdxl", 32, depth=1, resampler_dim=2048,
                                                resampler_heads=1, resampler_depth=1, seed=1)
    faceid_plus = {k: v for k, v in base.items() if not k.startswith("image_proj.")}
    faceid_plus["image_proj.perceiver_resampler.proj_in.weight"] = torch.zeros(4, 4)
    sd2 = {k: (torch.zeros(v.shape[0], 1024) if k.startswith("ip_adapter.") else v) for k, v in base.items()}
    no_ip = {k: v for k, v in base.items() if k.startswith("image_proj.")}
    stray = dict(base)
    stray["ip_adapter.99.to_k_ip.weight"] = stray["ip_adapter.1.to_k_ip.weight"].clone()
    stray["ip_adapter.99.to_v_ip.weight"] = stray["ip_adapter.1.to_v_ip.weight"].clone()
    face_embeds = tw.random_style_adapter_state_dict("ip_adapter_plus", "sdxl", 32, depth=1, feature_dim=512, seed=1)
    return {"faceid": (faceid, "FaceID"), "portrait": (portrait, "MLP projector"),
            "fullface": (fullface, "MLP projector"), "kolors": (kolors, "Kolors"),
            "faceid_plus": (faceid_plus, "FaceID Plus"), "sd2": (sd2, "1024-wide text context"),
            "no_ip": (no_ip, "no ip_adapter"), "stray": (stray, "layer numbering"),
            "face_embeds": (face_embeds, "face-embedding"), "plus_ok": (plus, None)}


@pytest.mark.parametrize("case", ["faceid", "portrait", "fullface", "kolors", "faceid_plus", "sd2", "no_ip",
                                  "stray", "face_embeds", "plus_ok"])
def test_unsupported_formats_are_refused_with_what_was_seen(host, case):
    sd, seen = _refusal_cases()[case]
    name = write_adapter(host, "x", "sd15", name=f"refuse_{case}.safetensors", sd=sd)
    if seen is None:
        assert load(host, name).spec.format == "ip_adapter_plus"
        return
    with pytest.raises(_error(host)) as e:
        load(host, name)
    msg = str(e.value)
    assert "StyleStudio Style Adapter Loader" in msg and seen in msg and name in msg
    assert "Supported: CSGO" in msg or "no ip_adapter" in seen


@pytest.mark.parametrize("how", ["garbage.safetensors", "truncated.safetensors", "truncated.bin", "html.bin"])
def test_corrupt_or_truncated_files_are_an_error_naming_the_file(host, how):
    folder = ipadapter_folder(host)
    good = write_adapter(host, "ip_adapter", "sd15")
    data = open(os.path.join(folder, good), "rb").read()
    if how.endswith(".bin"):
        tw.write_state_dict(os.path.join(folder, "tmp_good.bin"), tw.random_style_adapter_state_dict(
            "ip_adapter", "sd15", 32, seed=2))
        data = open(os.path.join(folder, "tmp_good.bin"), "rb").read()
    body = {"garbage.safetensors": os.urandom(300), "truncated.safetensors": data[: len(data) // 2],
            "truncated.bin": data[: len(data) // 2], "html.bin": b"<html>404 Not Found</html>"}[how]
    name = "corrupt_" + how
    with open(os.path.join(folder, name), "wb") as f:
        f.write(body)
    with pytest.raises(_error(host)) as e:
        load(host, name)
    assert name in str(e.value) and "corrupt" in str(e.value)


@pytest.mark.parametrize("fmt,arch", [("ip_adapter_plus", "sdxl"), ("ip_adapter_plus", "sd15"), ("csgo", "sdxl")])
def test_resampler_matches_an_independent_reference(host, fmt, arch):
    name = write_adapter(host, fmt, arch, resampler_heads=3, resampler_dim=80, resampler_depth=3, tokens=6)
    sd = state_dict_of(name)
    x = torch.randn(2, 257, 32, generator=torch.Generator().manual_seed(0))
    prefix = "style_image_proj." if fmt == "csgo" else "image_proj."
    expected = reference_resampler(sd, prefix, x).reshape(1, -1, CTX[arch])
    close(load(host, name).project(x), expected)


def test_linear_projector_matches_the_reference(host):
    name = write_adapter(host, "ip_adapter", "sdxl")
    x = torch.randn(3, 24, generator=torch.Generator().manual_seed(1))
    close(load(host, name).project(x), reference_linear_projector(state_dict_of(name), "image_proj.", x).reshape(
        1, -1, 2048))


@pytest.mark.parametrize("fmt,arch", FORMATS)
@pytest.mark.parametrize("negative", [False, True])
def test_style_and_unconditional_tokens_follow_the_reference(host, fmt, arch, negative):
    """CSGO / IP-Adapter: projector on zero features; Plus: projector on the encoder's output for zero pixels
    (after normalisation); image_negative: the negative image's tokens. Non-square images: short side to 224,
    centre crop."""
    name = write_adapter(host, fmt, arch)
    img, neg = image(3, 72, 48), (image(4, 50, 90) if negative else None)
    m = apply(host, host.tiny_model(arch), load(host, name), img, negative=neg)
    kw = next(iter(attn2_slots(m).values())).kwargs[0]
    cond, uncond = reference_tokens(host, fmt, state_dict_of(name), img, neg)
    close(kw["cond"], cond)
    close(kw["uncond"], uncond)
    assert not torch.allclose(kw["cond"], kw["uncond"])
    assert kw["stylestudio_role"] == "style"


def test_several_style_images_concatenate_their_tokens(host):
    name = write_adapter(host, "csgo", "sdxl")
    imgs = image(5, batch=2)
    kw = next(iter(attn2_slots(apply(host, host.tiny_model("sdxl"), load(host, name), imgs)).values())).kwargs[0]
    one = next(iter(attn2_slots(apply(host, host.tiny_model("sdxl"), load(host, name), imgs[1:])).values())).kwargs[0]
    assert kw["cond"].shape == (1, 64, 2048) and kw["uncond"].shape == (1, 64, 2048)
    close(kw["cond"][:, 32:], one["cond"])


def test_adapter_and_model_families_must_match(host):
    name = write_adapter(host, "ip_adapter", "sd15")
    with pytest.raises(_error(host), match="Apply Style Adapter.*SD1.5.*2048"):
        apply(host, host.tiny_model("sdxl"), load(host, name))


def test_wrong_clip_vision_width_is_a_clear_error(host):
    name = write_adapter(host, "ip_adapter_plus", "sdxl", feature_dim=40)
    with pytest.raises(_error(host), match="Apply Style Adapter.*40-wide penultimate_hidden_states"):
        apply(host, host.tiny_model("sdxl"), load(host, name))


def test_loader_lists_the_ipadapter_folder(host):
    name = write_adapter(host, "ip_adapter", "sd15")
    choices = host.pack().nodes.NODE_CLASS_MAPPINGS[LOADER].INPUT_TYPES()["required"]["adapter_name"][1]["options"]
    assert name in choices
    assert clip_vision(host) is not None


# ------------------------------------------------------------------------------------------------ workflows
def _wf(name):
    import json
    from pathlib import Path
    return json.loads((Path(__file__).resolve().parents[1] / "workflows" / f"{name}.json").read_text())


def _by_type(data, t):
    return [n for n in data["nodes"] if n["type"] == t]


def _model_chain(data, ks):
    nodes, links = {n["id"]: n for n in data["nodes"]}, {link[0]: link for link in data["links"]}
    chain, node = [], ks
    while True:
        inp = next((i for i in node["inputs"] if i["name"] == "model"), None)
        if inp is None or inp["link"] is None:
            return list(reversed(chain))
        node = nodes[links[inp["link"]][1]]
        chain.append(node["type"])


def test_csgo_workflow_has_the_papers_default_setting():
    data = _wf("stylestudio_csgo")
    (ks,) = _by_type(data, "KSampler")
    assert ks["widgets_values"] == [42, "fixed", 50, 5.0, "euler", "normal", 1.0]
    assert _model_chain(data, ks) == ["CheckpointLoaderSimple", "StyleStudioApplyStyleAdapter",
                                      "StyleStudioCrossModalAdaIN", "StyleStudioTeacherLayout"]
    assert _by_type(data, "CheckpointLoaderSimple")[0]["widgets_values"] == ["sd_xl_base_1.0.safetensors"]
    assert _by_type(data, "StyleStudioStyleAdapterLoader")[0]["widgets_values"] == ["csgo_4_32.bin"]
    assert _by_type(data, "StyleStudioApplyStyleAdapter")[0]["widgets_values"] == [1.0, "up", 0.0, 1.0]
    assert _by_type(data, "StyleStudioTeacherLayout")[0]["widgets_values"] == [0.0, 0.4, False, False]
    assert _by_type(data, "StyleStudioCrossModalAdaIN")[0]["widgets_values"] == [1.0, 0.0, 1.0]
    assert _by_type(data, "EmptyLatentImage")[0]["widgets_values"] == [1024, 1024, 1]
    assert "bigG" in _by_type(data, "CLIPVisionLoader")[0]["widgets_values"][0]
    assert not {n["type"] for n in data["nodes"]} & {"IPAdapterUnifiedLoader", "IPAdapterAdvanced"}


def test_native_negative_style_workflow_feeds_the_negative_image_to_the_adapter():
    data = _wf("stylestudio_negative_style_native")
    nodes, links = {n["id"]: n for n in data["nodes"]}, {link[0]: link for link in data["links"]}
    (apply_node,) = _by_type(data, "StyleStudioApplyStyleAdapter")
    neg = next(i for i in apply_node["inputs"] if i["name"] == "image_negative")
    assert nodes[links[neg["link"]][1]]["title"] == "Negative style image"  # the recipe's decoded image
    styled = [k for k in _by_type(data, "KSampler") if "StyleStudioStyleGuidance" in _model_chain(data, k)]
    assert len(styled) == 1 and _model_chain(data, styled[0])[1] == "StyleStudioApplyStyleAdapter"
    assert not {n["type"] for n in data["nodes"]} & {"IPAdapterUnifiedLoader", "IPAdapterAdvanced"}
