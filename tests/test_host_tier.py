"""Host-tier-only tests: the pack inside the real ComfyUI (and the real ComfyUI_IPAdapter_plus).

Run with  COMFYUI_PATH=/path/to/ComfyUI IPADAPTER_PLUS_PATH=/path/to/ComfyUI_IPAdapter_plus python -m pytest tests
The behavioural tests shared with the unit tier live in the other test files; these check what only the real
host can: ComfyUI's own loader and config parser, the real block layout of the tiny models, the real KSampler
path and IPAdapter_plus's own patch objects.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

if not os.environ.get("COMFYUI_PATH"):
    pytest.skip("host tier skipped: set COMFYUI_PATH=/path/to/ComfyUI (and IPADAPTER_PLUS_PATH="
                "/path/to/ComfyUI_IPAdapter_plus) to run it", allow_module_level=True)

from hosts import _tiny_weights as tw  # noqa: E402
from hosts.comfyui_host import MODEL_SEED, PACK_DIR_NAME, REPO_ROOT, TINY  # noqa: E402

needs_ipadapter_plus = pytest.mark.skipif(
    not os.environ.get("IPADAPTER_PLUS_PATH"),
    reason="needs ComfyUI_IPAdapter_plus: set IPADAPTER_PLUS_PATH=/path/to/ComfyUI_IPAdapter_plus")

ARCHS = ["sdxl", "sd15"]


@pytest.fixture(scope="module")
def chost(host):
    assert host.name == "comfyui", "COMFYUI_PATH is set, so the session host must be the real ComfyUI"
    return host


def _record_attn2(model):
    """Clone ``model`` with an attn2_patch that records (block, block_index, transformer_index, cond_or_uncond)
    of every cross-attention call."""
    calls = []

    def rec(n, context, value, extra_options):
        calls.append((tuple(extra_options["block"]), extra_options["block_index"],
                      extra_options["transformer_index"], list(extra_options["cond_or_uncond"]),
                      n.shape[0]))
        return n, context, value

    m = model.clone()
    m.set_model_attn2_patch(rec)
    return m, calls


def _sample(host, model, arch, **kw):
    pos = host.conditioning(arch, 1)
    neg = host.conditioning(arch, 2)
    return host.ksampler(model, pos, neg, host.empty_latent(arch), **kw)


# --- the real host itself ---------------------------------------------------------------------------------
def test_real_comfyui_headless_on_cpu(chost):
    import comfy
    import comfy.model_management as mm
    import folder_paths
    from comfy.cli_args import args
    from comfy.ldm.modules import attention

    root = os.path.realpath(os.environ["COMFYUI_PATH"])
    assert all(os.path.realpath(p).startswith(root) for p in comfy.__path__)
    assert args.cpu and mm.get_torch_device().type == "cpu"
    assert attention.optimized_attention is attention.attention_pytorch
    base = os.path.realpath(chost.state.base_dir)
    for d in (folder_paths.models_dir, folder_paths.get_output_directory(), folder_paths.get_input_directory(),
              folder_paths.get_temp_directory()):
        assert os.path.realpath(d).startswith(base), d
    # comfy_extras loaded (only audio/image-video files may fail without torchaudio / av extras)
    import nodes
    for name in ("KSamplerAdvanced", "SamplerCustomAdvanced", "PerturbedAttentionGuidance", "PerpNeg"):
        assert name in nodes.NODE_CLASS_MAPPINGS, name


# --- the pack through ComfyUI's own loader ---------------------------------------------------------------
def test_pack_loads_through_comfyui_custom_node_loader(chost):
    import nodes
    pack = chost.pack()
    path = os.path.join(chost.state.custom_nodes_dir, PACK_DIR_NAME)
    assert pack.__name__ == path.replace(".", "_x_"), "imported under ComfyUI's mangled module name"
    assert sys.modules[pack.__name__] is pack
    assert os.path.realpath(nodes.LOADED_MODULE_DIRS[PACK_DIR_NAME]) == os.path.realpath(REPO_ROOT)
    bad = [ln for ln in chost.load_log if PACK_DIR_NAME in ln
           and ("IMPORT FAILED" in ln or "Cannot import" in ln or "Unable to parse pyproject" in ln)]
    assert not bad, "\n".join(chost.load_log)
    # the pack has a `nodes` subpackage: ComfyUI's top-level `nodes` must still be ComfyUI's own
    assert os.path.realpath(nodes.__file__) == os.path.join(os.path.realpath(os.environ["COMFYUI_PATH"]),
                                                            "nodes.py")


def test_every_pack_node_is_registered_in_comfyui(chost):
    import nodes
    pack = chost.pack()
    classes = chost.node_classes()
    assert classes, "the pack registers no nodes"
    for name, cls in classes.items():
        assert nodes.NODE_CLASS_MAPPINGS.get(name) is cls, name
        assert cls.RELATIVE_PYTHON_MODULE == f"custom_nodes.{PACK_DIR_NAME}"
        assert name in nodes.NODE_DISPLAY_NAME_MAPPINGS, name
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == sys.modules[pack.__name__ + ".nodes"].NODE_DISPLAY_NAME_MAPPINGS[name]
        assert callable(getattr(cls(), cls.FUNCTION))


def test_pyproject_parses_with_comfyui_config_parser(chost):
    import tomllib
    from comfy_config import config_parser

    cfg = config_parser.extract_node_configuration(REPO_ROOT)
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        raw = tomllib.load(f)  # the parser fills defaults (version 1.0.0, requires-python >= 3.9): check raw too
    proj, tool = raw["project"], raw["tool"]["comfy"]
    assert cfg.project.name == proj["name"] == "comfyui-stylestudio"
    assert cfg.project.version == proj["version"]
    assert cfg.project.description == proj["description"] and proj["description"].strip()
    assert cfg.project.requires_python == proj["requires-python"]
    assert "license" in proj and (cfg.project.license.file or cfg.project.license.text)
    assert cfg.project.license.file == proj["license"]["file"] == "LICENSE"  # the pack ships its licence text
    assert os.path.isfile(os.path.join(REPO_ROOT, cfg.project.license.file))
    assert cfg.project.urls.repository == proj["urls"]["Repository"] and proj["urls"]["Repository"]
    assert cfg.tool_comfy.publisher_id == tool["PublisherId"] and tool["PublisherId"]
    assert cfg.tool_comfy.display_name == tool["DisplayName"] and tool["DisplayName"]
    assert cfg.tool_comfy.icon == tool["Icon"] and tool["Icon"]
    import re
    assert re.fullmatch(r"\d+\.\d+\.\d+", cfg.project.version), "semver"
    # requires-comfyui: ComfyUI's parser reads it from [tool.comfy] into supported_comfyui_version, and the ComfyUI
    # this tier runs must satisfy it (it is the oldest version the pack claims to support)
    assert cfg.project.supported_comfyui_version == tool["requires-comfyui"]
    import comfyui_version
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)", tool["requires-comfyui"].strip())
    assert minimum, tool["requires-comfyui"]
    running = tuple(int(p) for p in comfyui_version.__version__.split(".")[:3])
    assert running >= tuple(int(p) for p in minimum.groups()), (comfyui_version.__version__, tool["requires-comfyui"])


# --- tiny models: the real block layout -------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_has_the_real_block_layout(chost, arch):
    import comfy.model_base
    m = chost.tiny_model(arch)
    assert isinstance(m.model, comfy.model_base.SDXL if arch == "sdxl" else comfy.model_base.BaseModel)
    real = tw.SPATIAL_TRANSFORMERS[arch]
    layout = tw.transformer_layout(m)
    assert [(b, i) for b, i, _, _ in layout] == [(b, i) for b, i, _ in real]
    assert m.model.model_config.unet_config["context_dim"] == (2048 if arch == "sdxl" else 768)

    rec, calls = _record_attn2(m)
    _sample(chost, rec, arch, steps=1)
    seen = {(blk, bi): ti for blk, bi, ti, _, _ in calls}
    expected = {((b, i), 0): t for t, (b, i, _) in enumerate(real)}  # depth-1 tiny model: block_index 0
    assert seen == expected
    if arch == "sdxl":
        assert seen[(("output", 1), 0)] == 6 and seen[(("input", 8), 0)] == 3 and seen[(("middle", 0), 0)] == 4


def test_tiny_models_are_deterministic_fresh_clones(chost):
    a, b = chost.tiny_model("sdxl"), chost.tiny_model("sdxl")
    assert a is not b and a.model is b.model and a.is_clone(b)
    fresh = tw.make_tiny_sdxl(seed=MODEL_SEED["sdxl"], **TINY["sdxl"])
    for (ka, pa), (kb, pb) in zip(a.model.diffusion_model.state_dict().items(),
                                  fresh.model.diffusion_model.state_dict().items()):
        assert ka == kb and torch.equal(pa, pb), ka
    for k, p in a.model.diffusion_model.state_dict().items():
        assert torch.isfinite(p).all(), k


def test_non_unet_model_is_a_real_dit(chost):
    import comfy.model_base
    import comfy.model_patcher
    m = chost.non_unet_model()
    assert isinstance(m, comfy.model_patcher.ModelPatcher)
    assert isinstance(m.model, comfy.model_base.Flux)
    assert not hasattr(m.model.diffusion_model, "input_blocks")


@pytest.mark.parametrize("arch", ARCHS)
def test_ksampler_samples_tiny_model(chost, arch):
    m = chost.tiny_model(arch)
    a = _sample(chost, m, arch, seed=5)
    b = _sample(chost, chost.tiny_model(arch), arch, seed=5)
    c = _sample(chost, m, arch, seed=6)
    assert a.shape == (1, 4, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b), "same seed, same model -> identical latents"
    assert not torch.equal(a, c)


def test_sampler_names_are_ksamplers(chost):
    names = chost.sampler_names()
    for n in ("euler", "euler_ancestral", "dpmpp_2m", "heun"):
        assert n in names


def test_force_split_runs_every_chunk_as_its_own_forward(chost):
    import comfy.model_management as mm
    rec, calls = _record_attn2(chost.tiny_model("sdxl"))
    _sample(chost, rec, "sdxl", steps=1)
    assert {tuple(c[3]) for c in calls} == {(1, 0)} and {c[4] for c in calls} == {2}
    original = mm.get_free_memory
    calls.clear()
    with chost.force_split():
        _sample(chost, rec, "sdxl", steps=1)
    assert mm.get_free_memory is original
    assert {tuple(c[3]) for c in calls} == {(1,), (0,)} and {c[4] for c in calls} == {1}


# --- IPAdapter_plus's own code path -----------------------------------------------------------------------
@needs_ipadapter_plus
@pytest.mark.parametrize("arch", ARCHS)
def test_real_ipadapter_patches_and_changes_sampling(chost, arch):
    import nodes
    assert chost.real_ipadapter
    m = chost.tiny_model(arch)
    ip = chost.apply_ipadapter(m, arch=arch, weight=1.0, weight_type="linear")
    assert "patches_replace" not in m.model_options.get("transformer_options", {}), "input model untouched"
    attn2 = ip.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert len(attn2) == (70 if arch == "sdxl" else 16)  # IPAdapter_plus registers every real layer
    attn2_cls = type(next(iter(attn2.values())))
    assert attn2_cls.__name__ == "Attn2Replace"
    assert attn2_cls.__module__.startswith(chost.state.ipadapter_module.__name__)
    assert sys.modules[nodes.NODE_CLASS_MAPPINGS["IPAdapterEmbeds"].__module__].__name__.startswith(
        chost.state.ipadapter_module.__name__)
    toks = chost.ip_tokens(ip)
    ctx = 2048 if arch == "sdxl" else 768
    assert toks["cond"].shape == toks["uncond"].shape == (1, 4, ctx)
    assert not torch.equal(toks["cond"], toks["uncond"])

    base = _sample(chost, m, arch, seed=3)
    with_ip = _sample(chost, ip, arch, seed=3)
    assert torch.isfinite(with_ip).all()
    assert (with_ip - base).abs().max() > 1e-3, "the IP-Adapter must change the output"
    assert torch.equal(with_ip, _sample(chost, ip, arch, seed=3))


@needs_ipadapter_plus
@pytest.mark.parametrize("arch", ARCHS)
def test_random_ipadapter_file_loads_through_ipadapter_plus_loader(chost, arch):
    """The standard file layout, read by IPAdapterModelLoader: IPAdapter_plus must detect the architecture
    (SDXL: 1.to_k_ip has 2048 inputs; 11 transformers: 101_to_k_ip present) and a base (non-plus) adapter."""
    import nodes
    loader = nodes.NODE_CLASS_MAPPINGS["IPAdapterModelLoader"]()
    ipa = getattr(loader, loader.FUNCTION)(chost._ipadapter_file(arch))[0]
    ctx = 2048 if arch == "sdxl" else 768
    n_layers = 70 if arch == "sdxl" else 16
    assert sorted(ipa["ip_adapter"]) == sorted(f"{2 * n + 1}.to_{kv}_ip.weight" for n in range(n_layers)
                                               for kv in "kv")
    assert ipa["ip_adapter"]["1.to_k_ip.weight"].shape[1] == ctx
    assert ("101.to_k_ip.weight" in ipa["ip_adapter"]) == (arch == "sdxl")
    assert set(ipa["image_proj"]) == {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}  # base adapter
    widths = {mk: w for mk, _, w in tw.ipadapter_layers(arch, TINY[arch]["model_channels"], TINY[arch].get("depth"))}
    for mk, w in widths.items():
        assert ipa["ip_adapter"][f"{mk}.to_k_ip.weight"].shape == (w, ctx)


@needs_ipadapter_plus
def test_real_ipadapter_options_pass_through(chost):
    m = chost.tiny_model("sdxl")
    ms = m.get_model_object("model_sampling")
    ip = chost.apply_ipadapter(m, arch="sdxl", weight=0.7, weight_type="style transfer", start_at=0.2,
                               end_at=0.8, seed=1)
    kw = next(iter(ip.model_options["transformer_options"]["patches_replace"]["attn2"].values())).kwargs[0]
    assert kw["weight_type"] == "style transfer" and kw["weight"] == {6: 0.7}
    assert kw["sigma_start"] == pytest.approx(float(ms.percent_to_sigma(0.2)))
    assert kw["sigma_end"] == pytest.approx(float(ms.percent_to_sigma(0.8)))
    # seed picks the style tokens; negative_image replaces the uncond (zero-embed) tokens
    other = chost.ip_tokens(chost.apply_ipadapter(m, arch="sdxl", seed=2))
    neg = chost.ip_tokens(chost.apply_ipadapter(m, arch="sdxl", seed=1, negative_image=True))
    plain = chost.ip_tokens(ip)
    assert not torch.equal(plain["cond"], other["cond"])
    assert torch.equal(plain["uncond"], other["uncond"]), "without negative image: the zero-embed uncond"
    assert torch.equal(plain["cond"], neg["cond"]) and not torch.equal(plain["uncond"], neg["uncond"])


@needs_ipadapter_plus
def test_real_ipadapter_style_transfer_only_touches_output_block_1(chost):
    """weight_type 'style transfer' on SDXL = transformer_index 6: zero everywhere else."""
    m = chost.tiny_model("sdxl")
    ip = chost.apply_ipadapter(m, arch="sdxl", weight_type="style transfer")
    assert not torch.equal(_sample(chost, m, "sdxl", seed=4), _sample(chost, ip, "sdxl", seed=4))


@needs_ipadapter_plus
def test_real_ipadapter_zero_mask_is_a_no_op(chost):
    m = chost.tiny_model("sdxl")
    ip = chost.apply_ipadapter(m, arch="sdxl", weight_type="linear", mask=torch.zeros(64, 64))
    kw = next(iter(ip.model_options["transformer_options"]["patches_replace"]["attn2"].values())).kwargs[0]
    assert kw["mask"] is not None and kw["mask"].shape == (1, 64, 64)
    base = _sample(chost, m, "sdxl", seed=3)
    torch.testing.assert_close(_sample(chost, ip, "sdxl", seed=3), base, rtol=1e-4, atol=1e-3)


@needs_ipadapter_plus
def test_real_ipadapter_twice_stacks_in_one_attn2replace(chost):
    """Interop smoke: style + composition through IPAdapter_plus's own nodes share one Attn2Replace per key."""
    m = chost.tiny_model("sdxl")
    style = chost.apply_ipadapter(m, arch="sdxl", weight_type="style transfer", seed=1)
    both = chost.apply_ipadapter(style, arch="sdxl", weight_type="composition", seed=2)
    slots = both.model_options["transformer_options"]["patches_replace"]["attn2"]
    for key, obj in slots.items():
        assert len(obj.callback) == 2 and [k["weight_type"] for k in obj.kwargs] == ["style transfer",
                                                                                    "composition"], key
    first = style.model_options["transformer_options"]["patches_replace"]["attn2"]
    # clone() deep-copied the slot objects before .add, so the first model keeps one callback per slot
    assert not any(first[k] is slots[k] for k in slots)
    assert all(len(first[k].callback) == 1 for k in first)
    out_style = _sample(chost, style, "sdxl", seed=3)
    out_both = _sample(chost, both, "sdxl", seed=3)
    assert torch.isfinite(out_both).all()
    assert not torch.equal(out_style, out_both)


# --- what StyleStudio reads from IPAdapter_plus's objects ---------------------------------------------------
@needs_ipadapter_plus
def test_role_detection_reads_ipadapter_plus_real_classes(chost):
    """Identity detection relies on IPAdapter_plus's own names: the IPAdapter module's flags and its face-ID
    projection classes. Checked on the real module: a base adapter reads as "cannot tell" (so: style); with
    IPAdapter_plus's own FaceID projection, or flagged portrait / full-face, it reads as identity."""
    import copy
    import importlib
    from stylestudio_core_import import core
    routing = core.routing
    m = chost.apply_ipadapter(chost.tiny_model("sdxl"), arch="sdxl", weight_type="linear")
    obj = next(iter(m.model_options["transformer_options"]["patches_replace"]["attn2"].values()))
    callback, kwargs = obj.callback[0], obj.kwargs[0]
    module = kwargs["ipadapter"]
    assert type(module).__name__ == "IPAdapter" and callback.__name__ == "ipadapter_attention"
    for flag in ("is_full", "is_portrait_unnorm", "is_plus"):  # the names exist, and a base adapter has none set
        assert getattr(module, flag) is False, flag
    assert type(module.image_proj_model).__name__ == "ImageProjModel"
    assert routing.detected_role(callback, kwargs) is None
    assert routing.callback_role(callback, kwargs, 1, None) == "style"
    projections = importlib.import_module(chost.state.ipadapter_module.__name__ + ".image_proj_models")
    for name in routing._FACE_PROJECTIONS:
        face = copy.copy(module)
        face.image_proj_model = getattr(projections, name).__new__(getattr(projections, name))
        assert routing.detected_role(callback, {**kwargs, "ipadapter": face}) == "identity", name
    for flag in ("is_portrait_unnorm", "is_full"):
        flagged = copy.copy(module)
        setattr(flagged, flag, True)
        assert routing.detected_role(callback, {**kwargs, "ipadapter": flagged}) == "identity", flag


@needs_ipadapter_plus
@pytest.mark.parametrize("weight_type", ["style transfer", "composition", "style transfer precise"])
def test_layers_skipped_as_inactive_are_those_ipadapter_plus_returns_0_for(chost, weight_type):
    """The route skips a callback before calling it where IPAdapter_plus's ipadapter_attention returns the integer
    0 (outside its weight map). Checked against the real callback in every layer of a real run."""
    from stylestudio_core_import import core
    routing = core.routing
    m = chost.apply_ipadapter(chost.tiny_model("sdxl"), arch="sdxl", weight_type=weight_type)
    slots = m.model_options["transformer_options"]["patches_replace"]["attn2"]
    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, q, k, v, extra_options):
            for callback, kwargs in zip(self.inner.callback, self.inner.kwargs):
                skipped = routing._known_inactive(callback, kwargs, extra_options)
                returned = callback(q, q, k, v, extra_options, **kwargs)
                seen.append((skipped, isinstance(returned, int) and returned == 0))
            return self.inner(q, k, v, extra_options)

    spied = m.clone()
    spied_slots = spied.model_options["transformer_options"]["patches_replace"]["attn2"]
    for key in slots:
        spied_slots[key] = Spy(spied_slots[key])
    _sample(chost, spied, "sdxl", steps=1)
    assert seen and any(s for s, _ in seen) and any(not s for s, _ in seen)
    assert all(zero for skipped, zero in seen if skipped), "skipped a layer IPAdapter_plus would have fed"
    assert all(skipped for skipped, zero in seen if zero), "called a callback that only returns 0"
