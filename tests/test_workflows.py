"""The shipped example workflows (workflows/*.json) and the headless validator/runner (stylestudio_cli).

Unit tier (always; no ComfyUI needed): every workflow parses, has its thumbnail, has a consistent link table, uses
only core / IPAdapter_plus / StyleStudio nodes, keeps the paper's settings, and every StyleStudio node's inputs
and widget values match the node's CURRENT inputs (a renamed or reordered input fails here, not for a user). The
UI->API converter runs on every workflow with the pack's real node definitions plus small fake definitions of
the core and IPAdapter_plus nodes, and on small synthetic graphs for each conversion rule.

Host tier (COMFYUI_PATH set; the IP-Adapter parts also need IPADAPTER_PLUS_PATH): every workflow validates
against the real ComfyUI + ComfyUI_IPAdapter_plus (ComfyUI's own execution.validate_prompt included), with empty
model files of the documented names; broken variants are reported; and `run` executes shipped workflows end to
end with tiny random-weight models substituted for the checkpoints (via --set NODE.class_type=...).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WF_DIR = REPO / "workflows"
WORKFLOWS = sorted(WF_DIR.glob("*.json"))
WF_IDS = [p.stem for p in WORKFLOWS]
REQUIRED = {"stylestudio_sdxl_ipadapter", "stylestudio_negative_style", "stylestudio_layout_sweep",
            "stylestudio_sd15"}
HOST = bool(os.environ.get("COMFYUI_PATH"))
IPA = bool(os.environ.get("IPADAPTER_PLUS_PATH"))
HOST_SKIP = ("host tier skipped: set COMFYUI_PATH=/path/to/ComfyUI (and IPADAPTER_PLUS_PATH=/path/to/"
             "ComfyUI_IPAdapter_plus) to validate and run the workflows against a real ComfyUI")
IPA_SKIP = "needs ComfyUI_IPAdapter_plus: set IPADAPTER_PLUS_PATH=/path/to/ComfyUI_IPAdapter_plus"


def _import_by_path(name: str, init: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# the CLI package, imported from this checkout without putting the repo root (which has a `nodes` package that
# would shadow ComfyUI's `nodes` module) on sys.path
cli = _import_by_path("stylestudio_cli", REPO / "stylestudio_cli" / "__init__.py")
from stylestudio_cli import convert, runner  # noqa: E402
from stylestudio_cli.convert import NodeDef, check_links, ui_to_api, widget_inputs  # noqa: E402


def load(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def wf(name: str) -> dict:
    return load(WF_DIR / f"{name}.json")


def by_type(workflow, ctype):
    return [n for n in workflow["nodes"] if n["type"] == ctype]


def by_title(workflow, title):
    (node,) = [n for n in workflow["nodes"] if n.get("title") == title]
    return node


@pytest.fixture(scope="module")
def pack_mappings(request):
    """The pack's {node id: class}, as the host (real ComfyUI, or the stand-in that provides comfy_api for the
    pack's V3 nodes) loaded it."""
    return request.getfixturevalue("host").node_classes()


# --------------------------------------------------------------------------------------------------------------
# small fake definitions of the core and IPAdapter_plus nodes the workflows use (shapes as in ComfyUI v0.3.64 and
# ComfyUI_IPAdapter_plus; the real ones are checked on the host tier)
# --------------------------------------------------------------------------------------------------------------
F = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0})
SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "uni_pc"]
SCHEDULERS = ["normal", "karras", "exponential", "simple"]
WEIGHT_TYPES = ["linear", "ease in", "ease out", "style transfer", "composition", "strong style transfer",
                "style and composition", "style transfer precise", "composition precise"]
PRESETS = ["LIGHT - SD1.5 only (low strength)", "STANDARD (medium strength)", "VIT-G (medium strength)",
           "PLUS (high strength)", "PLUS FACE (portraits)", "FULL FACE - SD1.5 only (portraits stronger)"]
FAKE_CORE = {
    "CheckpointLoaderSimple": ({"required": {"ckpt_name": (["sd_xl_base_1.0.safetensors"],)}},
                               ("MODEL", "CLIP", "VAE")),
    "LoadImage": ({"required": {"image": (["stylestudio_style.png"], {"image_upload": True})}}, ("IMAGE", "MASK")),
    "CLIPTextEncode": ({"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}},
                       ("CONDITIONING",)),
    "EmptyLatentImage": ({"required": {"width": ("INT", {"default": 512, "min": 16, "max": 16384}),
                                       "height": ("INT", {"default": 512, "min": 16, "max": 16384}),
                                       "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})}}, ("LATENT",)),
    "KSampler": ({"required": {"model": ("MODEL",),
                               "seed": ("INT", {"default": 0, "min": 0, "max": 2**64 - 1,
                                                "control_after_generate": True}),
                               "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                               "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}),
                               "sampler_name": (SAMPLERS,), "scheduler": (SCHEDULERS,),
                               "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                               "latent_image": ("LATENT",), "denoise": F}}, ("LATENT",)),
    "VAEDecode": ({"required": {"samples": ("LATENT",), "vae": ("VAE",)}}, ("IMAGE",)),
    "SaveImage": ({"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}}, ()),
    "PreviewImage": ({"required": {"images": ("IMAGE",)}}, ()),
    "ImageScale": ({"required": {"image": ("IMAGE",),
                                 "upscale_method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],),
                                 "width": ("INT", {"default": 512, "min": 0, "max": 16384}),
                                 "height": ("INT", {"default": 512, "min": 0, "max": 16384}),
                                 "crop": (["disabled", "center"],)}}, ("IMAGE",)),
    # a V3 node: INPUT_TYPES gives ("FLOAT", {...}) like V1
    "Canny": ({"required": {"image": ("IMAGE", {}),
                            "low_threshold": ("FLOAT", {"default": 0.4, "min": 0.01, "max": 0.99}),
                            "high_threshold": ("FLOAT", {"default": 0.8, "min": 0.01, "max": 0.99})}}, ("IMAGE",)),
    "ControlNetLoader": ({"required": {"control_net_name": (["xinsir-controlnet-canny-sdxl-1.0.safetensors"],)}},
                         ("CONTROL_NET",)),
    "ControlNetApplyAdvanced": ({"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                                              "control_net": ("CONTROL_NET",), "image": ("IMAGE",),
                                              "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0}),
                                              "start_percent": F, "end_percent": F},
                                 "optional": {"vae": ("VAE",)}}, ("CONDITIONING", "CONDITIONING")),
    "CLIPVisionLoader": ({"required": {"clip_name": (["CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"],)}},
                         ("CLIP_VISION",)),
    "IPAdapterUnifiedLoader": ({"required": {"model": ("MODEL",), "preset": (PRESETS,)},
                                "optional": {"ipadapter": ("IPADAPTER",)}}, ("MODEL", "IPADAPTER")),
    "IPAdapterAdvanced": ({"required": {"model": ("MODEL",), "ipadapter": ("IPADAPTER",), "image": ("IMAGE",),
                                        "weight": ("FLOAT", {"default": 1.0, "min": -1, "max": 5}),
                                        "weight_type": (WEIGHT_TYPES,),
                                        "combine_embeds": (["concat", "add", "subtract", "average", "norm average"],),
                                        "start_at": F, "end_at": F,
                                        "embeds_scaling": (["V only", "K+V", "K+V w/ C penalty",
                                                            "K+mean(V) w/ C penalty"],)},
                           "optional": {"image_negative": ("IMAGE",), "attn_mask": ("MASK",),
                                        "clip_vision": ("CLIP_VISION",)}}, ("MODEL",)),
}
IPADAPTER_TYPES = {"IPAdapterUnifiedLoader", "IPAdapterAdvanced"}
CORE_TYPES = set(FAKE_CORE) - IPADAPTER_TYPES
FRONTEND_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
STYLESTUDIO_TYPES = {"StyleStudioCrossModalAdaIN", "StyleStudioTeacherLayout", "StyleStudioStyleGuidance",
                     "StyleStudioStyleAdapterLoader", "StyleStudioApplyStyleAdapter"}


@pytest.fixture(scope="module")
def defs(pack_mappings):
    out = {name: NodeDef(inputs=inp, outputs=outs, output_node=name in ("SaveImage", "PreviewImage"))
           for name, (inp, outs) in FAKE_CORE.items()}
    out.update(convert.node_defs_from_mappings(pack_mappings))
    return out


# ==============================================================================================================
# unit tier: the files
# ==============================================================================================================
def test_required_workflows_are_shipped():
    assert REQUIRED <= set(WF_IDS), f"missing: {REQUIRED - set(WF_IDS)}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_workflow_parses_as_ui_format(path):
    data = load(path)
    assert not convert.is_api_format(data)
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "version"):
        assert key in data, key
    assert data["version"] == 0.4
    ids = [n["id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids)), "duplicate node ids"
    assert data["last_node_id"] >= max(ids)
    assert data["last_link_id"] >= max((l[0] for l in data["links"]), default=0)
    for node in data["nodes"]:
        for key in ("id", "type", "pos", "size", "mode", "inputs", "outputs", "widgets_values"):
            assert key in node, f"node {node.get('id')} has no {key}"
        assert node["mode"] == 0, f"node {node['id']} is muted/bypassed in a shipped workflow"
        if node["type"] in ("Note", "MarkdownNote"):
            assert len(node["widgets_values"]) == 1 and len(node["widgets_values"][0]) > 40
    assert by_type(data, "Note"), "no Note node explaining the knobs and models"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    length, ctype = struct.unpack(">I4s", data[8:16])
    assert ctype == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert zlib.crc32(data[12:16 + length]) == struct.unpack(">I", data[16 + length:20 + length])[0]
    return w, h


@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_workflow_has_a_thumbnail(path):
    thumb = path.with_suffix(".png")
    assert thumb.is_file(), f"{thumb.name} missing (same-named thumbnail for the template browser)"
    w, h = _png_size(thumb)
    assert 256 <= w <= 1024 and 256 <= h <= 1024, (w, h)
    assert thumb.stat().st_size > 5000
    # ComfyUI's template browser asks a custom node's templates for a same-named .jpg
    jpg = path.with_suffix(".jpg")
    assert jpg.is_file() and jpg.read_bytes()[:3] == b"\xff\xd8\xff", f"{jpg.name} missing or not a JPEG"


@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_links_are_consistent(path):
    problems = check_links(load(path))
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_only_core_ipadapter_and_stylestudio_nodes(path):
    types = {n["type"] for n in load(path)["nodes"]}
    assert types <= CORE_TYPES | IPADAPTER_TYPES | STYLESTUDIO_TYPES | FRONTEND_TYPES, \
        types - (CORE_TYPES | IPADAPTER_TYPES | STYLESTUDIO_TYPES | FRONTEND_TYPES)


def _fits(kind, value, opts):
    if kind == "FLOAT":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "INT":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "BOOLEAN":
        ok = isinstance(value, bool)
    elif kind == "STRING":
        ok = isinstance(value, str)
    else:  # a model-file list depends on the disk: a documented model file name is a valid value
        ok = value in opts.get("options", []) or value in DOCUMENTED
    if ok and kind in ("INT", "FLOAT"):
        ok = opts.get("min", value) <= value <= opts.get("max", value)
    return ok


@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_stylestudio_nodes_match_their_current_inputs(path, pack_mappings):
    """Input names, order and types, widget values (count, type, range) and outputs of every StyleStudio node
    against the pack's current INPUT_TYPES/RETURN_TYPES: renaming, reordering, adding or removing an input
    breaks this test."""
    data = load(path)
    nodes = [n for n in data["nodes"] if n["type"].startswith("StyleStudio")]
    assert nodes
    for node in nodes:
        assert node["type"] in pack_mappings, f"{node['type']} is not a node of the pack"
        cls = pack_mappings[node["type"]]
        d = NodeDef(inputs=cls.INPUT_TYPES(), outputs=tuple(cls.RETURN_TYPES))
        expected = [(name, "COMBO" if isinstance(spec[0], (list, tuple)) else spec[0])
                    for cat in ("required", "optional") for name, spec in (d.inputs.get(cat) or {}).items()]
        got = [(inp["name"], inp["type"]) for inp in node["inputs"]]
        assert got == expected, f"#{node['id']} {node['type']}: inputs {got} != current {expected}"
        widgets = widget_inputs(d)
        for inp in node["inputs"]:
            is_widget = any(w[0] == inp["name"] for w in widgets)
            assert (inp.get("widget") or {}).get("name") == (inp["name"] if is_widget else None), inp
        values = node["widgets_values"]
        assert len(values) == len(widgets), \
            f"#{node['id']} {node['type']}: {len(values)} widget values for widgets {[w[0] for w in widgets]}"
        for (name, kind, opts), value in zip(widgets, values):
            assert _fits(kind, value, opts), f"#{node['id']} {node['type']}.{name} = {value!r} ({kind}, {opts})"
        assert [o["type"] for o in node["outputs"]] == list(d.outputs)


def _model_chain(data, ks):
    """Node types along the MODEL path into a KSampler, source first."""
    nodes = {n["id"]: n for n in data["nodes"]}
    links = {l[0]: l for l in data["links"]}
    chain, node = [], ks
    while True:
        inp = next((i for i in node["inputs"] if i["name"] == "model"), None)
        if inp is None or inp["link"] is None:
            break
        node = nodes[links[inp["link"]][1]]
        chain.append(node["type"])
    return list(reversed(chain))


def _ksampler(node):
    seed, control, steps, cfg, sampler, scheduler, denoise = node["widgets_values"]
    return dict(seed=seed, control=control, steps=steps, cfg=cfg, sampler=sampler, scheduler=scheduler,
                denoise=denoise)


@pytest.mark.parametrize("name", ["stylestudio_sdxl_ipadapter", "stylestudio_sd15", "stylestudio_layout_sweep"])
def test_paper_settings_and_documented_order(name):
    data = wf(name)
    for ks in by_type(data, "KSampler"):
        s = _ksampler(ks)
        assert s["steps"] == 50 and 5 <= s["cfg"] <= 7 and s["sampler"] in ("euler", "dpmpp_2m"), s
        assert _model_chain(data, ks) == ["CheckpointLoaderSimple", "IPAdapterUnifiedLoader", "IPAdapterAdvanced",
                                          "StyleStudioCrossModalAdaIN", "StyleStudioTeacherLayout"]
    for t in by_type(data, "StyleStudioTeacherLayout"):
        assert t["widgets_values"] == [0.0, 0.4, False, False]
    for a in by_type(data, "StyleStudioCrossModalAdaIN"):
        assert a["widgets_values"] == [1.0, 0.0, 1.0]
    for ipa in by_type(data, "IPAdapterAdvanced"):
        assert ipa["widgets_values"][1] == "style transfer"
    for u in by_type(data, "IPAdapterUnifiedLoader"):
        assert u["widgets_values"] == ["PLUS (high strength)"]
    size = 512 if name == "stylestudio_sd15" else 1024
    assert [n["widgets_values"][:2] for n in by_type(data, "EmptyLatentImage")] == [[size, size]]


DOCUMENTED = {  # model file names as the projects document them (README / model cards), and their folders
    "sd_xl_base_1.0.safetensors": "checkpoints", "v1-5-pruned-emaonly-fp16.safetensors": "checkpoints",
    "RealVisXL_V4.0.safetensors": "checkpoints",
    "xinsir-controlnet-canny-sdxl-1.0.safetensors": "controlnet",
    "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors": "clip_vision",
    "ip-adapter-plus_sdxl_vit-h.safetensors": "ipadapter", "ip-adapter-plus_sd15.safetensors": "ipadapter",
    "csgo_4_32.bin": "ipadapter", "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors": "clip_vision",
}


@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_model_files_are_documented_in_the_notes(path):
    data = load(path)
    notes = "\n".join(n["widgets_values"][0] for n in data["nodes"] if n["type"] in ("Note", "MarkdownNote"))
    used = [n["widgets_values"][0] for n in data["nodes"] if n["type"] in ("CheckpointLoaderSimple",
                                                                           "ControlNetLoader")]
    for fname in used:
        assert fname in DOCUMENTED, f"{fname} is not a documented model file name"
        assert fname in notes, f"the notes do not say where to get {fname}"
    if by_type(data, "IPAdapterUnifiedLoader"):
        assert "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors" in notes
        arch_sd15 = any("v1-5" in f for f in used)
        assert ("ip-adapter-plus_sd15.safetensors" if arch_sd15 else "ip-adapter-plus_sdxl_vit-h.safetensors") in notes
        assert "models/ipadapter" in notes and "models/clip_vision" in notes


def test_negative_style_recipe():
    data = wf("stylestudio_negative_style")
    nodes = {n["id"]: n for n in data["nodes"]}
    links = {l[0]: l for l in data["links"]}

    def src(node, name):
        inp = next(i for i in node["inputs"] if i["name"] == name)
        return nodes[links[inp["link"]][1]] if inp["link"] is not None else None

    (scale,) = by_type(data, "ImageScale")
    assert scale["widgets_values"][1:3] == [512, 512]
    (canny,) = by_type(data, "Canny")
    assert canny["widgets_values"] == [0.4, 0.8] and src(canny, "image") is scale
    (cn,) = by_type(data, "ControlNetLoader")
    assert cn["widgets_values"] == ["xinsir-controlnet-canny-sdxl-1.0.safetensors"]
    (apply,) = by_type(data, "ControlNetApplyAdvanced")
    assert apply["widgets_values"][0] == 0.5 and src(apply, "image") is canny and src(apply, "control_net") is cn
    neg_prompt = src(apply, "negative")["widgets_values"][0]
    for word in ("painting", "drawing", "anime", "render"):
        assert word in neg_prompt
    recipe_ks = next(k for k in by_type(data, "KSampler") if src(k, "positive") is apply)
    s = _ksampler(recipe_ks)
    assert s["steps"] == 50 and s["cfg"] == 7.0
    assert src(recipe_ks, "model")["widgets_values"] == ["RealVisXL_V4.0.safetensors"]
    (ipa,) = by_type(data, "IPAdapterAdvanced")
    neg_img = src(ipa, "image_negative")
    assert neg_img["type"] == "VAEDecode" and src(neg_img, "samples") is recipe_ks
    assert src(ipa, "image") is src(scale, "image")  # the original style image is the reference
    main_ks = next(k for k in by_type(data, "KSampler") if k is not recipe_ks)
    assert _model_chain(data, main_ks) == ["CheckpointLoaderSimple", "IPAdapterUnifiedLoader", "IPAdapterAdvanced",
                                           "StyleStudioCrossModalAdaIN", "StyleStudioTeacherLayout",
                                           "StyleStudioStyleGuidance"]
    assert _ksampler(main_ks)["steps"] == 50 and 5 <= _ksampler(main_ks)["cfg"] <= 7


def test_layout_sweep_shares_prompt_seed_and_latent():
    data = wf("stylestudio_layout_sweep")
    nodes = {n["id"]: n for n in data["nodes"]}
    links = {l[0]: l for l in data["links"]}
    kss = by_type(data, "KSampler")
    assert len(kss) >= 3 and len(by_type(data, "LoadImage")) >= 3
    for name in ("positive", "negative", "latent_image", "seed"):
        sources = {links[next(i for i in k["inputs"] if i["name"] == name)["link"]][1] for k in kss}
        assert len(sources) == 1, f"the KSamplers do not share their {name}"
    (seed_src,) = {links[next(i for i in k["inputs"] if i["name"] == "seed")["link"]][1] for k in kss}
    assert nodes[seed_src]["type"] == "PrimitiveNode"
    images = set()
    for k in kss:
        chain_img = None
        node = k
        while node["type"] != "IPAdapterAdvanced":
            node = nodes[links[next(i for i in node["inputs"] if i["name"] == "model")["link"]][1]]
        chain_img = links[next(i for i in node["inputs"] if i["name"] == "image")["link"]][1]
        images.add(chain_img)
    assert len(images) == len(kss), "each branch needs its own style image"


# ==============================================================================================================
# unit tier: the converter
# ==============================================================================================================
@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_converter_on_shipped_workflows(path, defs):
    data = load(path)
    conv = ui_to_api(data, defs)
    assert not conv.problems, "\n".join(map(str, conv.problems))
    executable = [n for n in data["nodes"] if n["type"] not in FRONTEND_TYPES]
    assert set(conv.prompt) == {str(n["id"]) for n in executable}
    for node in executable:
        entry = conv.prompt[str(node["id"])]
        assert entry["class_type"] == node["type"]
        d = defs[node["type"]]
        # every required input is present, every linked input is a link to an executable node
        for name in d.inputs.get("required", {}):
            assert name in entry["inputs"], f"#{node['id']} {node['type']} lacks {name}"
        for name, value in entry["inputs"].items():
            if isinstance(value, list):
                assert value[0] in conv.prompt and isinstance(value[1], int)
        assert set(entry["inputs"]) <= set(d.input_names())
    # seed-control and upload-button values are editor-only: never in the API prompt
    for entry in conv.prompt.values():
        if entry["class_type"] == "LoadImage":
            assert list(entry["inputs"]) == ["image"] and entry["inputs"]["image"].endswith(".png")
        if entry["class_type"] == "KSampler":
            assert isinstance(entry["inputs"]["seed"], int) and entry["inputs"]["steps"] == 50


def test_converter_values_sdxl(defs):
    data = wf("stylestudio_sdxl_ipadapter")
    p = ui_to_api(data, defs).prompt
    ks = next(v for v in p.values() if v["class_type"] == "KSampler")
    assert {k: ks["inputs"][k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")} == \
        {"seed": 42, "steps": 50, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    img = next(v for v in p.values() if v["class_type"] == "LoadImage")
    assert img["inputs"] == {"image": "stylestudio_style.png"}
    teacher = next(v for v in p.values() if v["class_type"] == "StyleStudioTeacherLayout")
    adain_id = next(k for k, v in p.items() if v["class_type"] == "StyleStudioCrossModalAdaIN")
    assert teacher["inputs"] == {"start_at": 0.0, "end_at": 0.4, "share_cross_attention": False,
                                 "return_teacher": False, "model": [adain_id, 0]}
    assert ks["_meta"]["title"] == "KSampler" and img["_meta"]["title"] == "Style image"


def test_converter_primitive_node_drives_every_seed(defs):
    data = copy.deepcopy(wf("stylestudio_layout_sweep"))
    (prim,) = by_type(data, "PrimitiveNode")
    prim["widgets_values"] = [1234, "fixed"]
    p = ui_to_api(data, defs).prompt
    seeds = [v["inputs"]["seed"] for v in p.values() if v["class_type"] == "KSampler"]
    assert seeds == [1234, 1234, 1234]
    assert not any(v["class_type"] == "PrimitiveNode" for v in p.values())


# --- synthetic graphs, one rule each -----------------------------------------------------------------------------
class G:
    """A tiny UI-format graph builder for converter tests."""

    def __init__(self, defs):
        self.defs = defs
        self.nodes, self.links = [], []

    def add(self, ctype, widgets=(), mode=0, title=None, inputs=None, outputs=None):
        nid = len(self.nodes) + 1
        d = self.defs.get(ctype)
        if inputs is None:
            inputs = []
            if d is not None:
                wnames = {w[0] for w in widget_inputs(d)}
                for cat in ("required", "optional"):
                    for name, spec in (d.inputs.get(cat) or {}).items():
                        t = "COMBO" if isinstance(spec[0], (list, tuple)) else spec[0]
                        e = {"name": name, "type": t, "link": None}
                        if name in wnames:
                            e["widget"] = {"name": name}
                        inputs.append(e)
        if outputs is None:
            outputs = [{"name": t, "type": t, "links": []} for t in (d.outputs if d else ())]
        node = {"id": nid, "type": ctype, "pos": [0, 0], "size": [100, 100], "mode": mode, "inputs": inputs,
                "outputs": outputs, "widgets_values": list(widgets)}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return nid

    def link(self, a, a_slot, b, b_input):
        lid = len(self.links) + 1
        na, nb = self.nodes[a - 1], self.nodes[b - 1]
        slot = next(i for i, x in enumerate(nb["inputs"]) if x["name"] == b_input)
        na["outputs"][a_slot]["links"].append(lid)
        nb["inputs"][slot]["link"] = lid
        self.links.append([lid, a, a_slot, b, slot, na["outputs"][a_slot]["type"]])

    def wf(self):
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "version": 0.4}


def _chain(defs, adain_mode=0, teacher_widgets=(0.0, 0.4, False, False)):
    g = G(defs)
    ck = g.add("CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"])
    ad = g.add("StyleStudioCrossModalAdaIN", [1.0, 0.0, 1.0], mode=adain_mode)
    te = g.add("StyleStudioTeacherLayout", list(teacher_widgets))
    ks = g.add("KSampler", [7, "randomize", 20, 5.0, "euler", "normal", 1.0])
    g.link(ck, 0, ad, "model")
    g.link(ad, 0, te, "model")
    g.link(te, 0, ks, "model")
    return g, ck, ad, te, ks


def test_bypassed_node_passes_its_matching_input_through(defs):
    g, ck, ad, te, ks = _chain(defs, adain_mode=convert.MODE_BYPASS)
    conv = ui_to_api(g.wf(), defs)
    assert str(ad) not in conv.prompt
    assert conv.prompt[str(te)]["inputs"]["model"] == [str(ck), 0]
    assert conv.prompt[str(ks)]["inputs"]["seed"] == 7 and conv.prompt[str(ks)]["inputs"]["steps"] == 20


def test_bypass_picks_the_input_of_the_right_type(defs):
    g = G(defs)
    ck = g.add("CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"])
    img = g.add("LoadImage", ["stylestudio_style.png", "image"])
    ipa = g.add("IPAdapterAdvanced", [1.0, "style transfer", "concat", 0.0, 1.0, "V only"], mode=4)
    ks = g.add("KSampler", [1, "fixed", 20, 5.0, "euler", "normal", 1.0])
    g.link(ck, 0, ipa, "model")
    g.link(img, 0, ipa, "image")
    g.link(ipa, 0, ks, "model")
    conv = ui_to_api(g.wf(), defs)
    assert conv.prompt[str(ks)]["inputs"]["model"] == [str(ck), 0]


def test_muted_node_drops_the_input_and_says_why(defs):
    g, ck, ad, te, ks = _chain(defs, adain_mode=convert.MODE_MUTED)
    conv = ui_to_api(g.wf(), defs)
    assert str(ad) not in conv.prompt and "model" not in conv.prompt[str(te)]["inputs"]
    assert "muted" in conv.dropped[(str(te), "model")]


def test_widget_input_linked_from_a_muted_node_is_removed(defs):
    """graphToPrompt resolves the link to the muted node, then deletes every input linked to a node it does not
    send: the widget's own value is gone too (ComfyUI then reports the missing input)."""
    d = dict(defs)
    d["IntSource"] = NodeDef(inputs={"required": {}}, outputs=("INT",))
    g = G(d)
    src = g.add("IntSource", [], mode=convert.MODE_MUTED)
    ks = g.add("KSampler", [7, "fixed", 20, 5.0, "euler", "normal", 1.0])
    g.link(src, 0, ks, "seed")
    conv = ui_to_api(g.wf(), d)
    assert "seed" not in conv.prompt[str(ks)]["inputs"] and conv.prompt[str(ks)]["inputs"]["steps"] == 20
    assert "muted" in conv.dropped[(str(ks), "seed")]


def test_reroute_and_notes(defs):
    g = G(defs)
    ck = g.add("CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"])
    rr = g.add("Reroute", inputs=[{"name": "", "type": "*", "link": None}],
               outputs=[{"name": "", "type": "MODEL", "links": []}])
    ad = g.add("StyleStudioCrossModalAdaIN", [0.5, 0.1, 0.9])
    g.add("Note", ["hello"], inputs=[], outputs=[])
    g.add("MarkdownNote", ["# hi"], inputs=[], outputs=[])
    g.link(ck, 0, rr, "")
    g.link(rr, 0, ad, "model")
    conv = ui_to_api(g.wf(), defs)
    assert set(conv.prompt) == {str(ck), str(ad)}
    assert conv.prompt[str(ad)]["inputs"] == {"strength": 0.5, "start_at": 0.1, "end_at": 0.9, "model": [str(ck), 0]}


def test_converted_widget_with_a_link_takes_the_link(defs):
    g = G(defs)
    a = g.add("StyleStudioStyleGuidance", [7.0, 0.0, 1.0])
    # pretend some node outputs a FLOAT into style_cfg (old format: converted widget)
    src = g.add("PrimitiveNode", [3.5], inputs=[], outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [],
                                                            "widget": {"name": "style_cfg"}}])
    g.link(src, 0, a, "style_cfg")
    conv = ui_to_api(g.wf(), defs)
    assert conv.prompt[str(a)]["inputs"]["style_cfg"] == 3.5


def test_old_format_without_widget_inputs(defs):
    """Editors before the widget-input format list only sockets in `inputs`; values come from widgets_values."""
    g, ck, ad, te, ks = _chain(defs)
    data = g.wf()
    for node in data["nodes"]:
        kept = [i for i in node["inputs"] if "widget" not in i or i["link"] is not None]
        remap = {node["inputs"].index(i): n for n, i in enumerate(kept)}
        node["inputs"] = kept
        for l in data["links"]:
            if l[3] == node["id"]:
                l[4] = remap[l[4]]
    assert not check_links(data)
    conv = ui_to_api(data, defs)
    assert not conv.problems
    assert conv.prompt[str(te)]["inputs"]["end_at"] == 0.4 and conv.prompt[str(te)]["inputs"]["model"] == [str(ad), 0]


def test_unknown_types_name_their_pack(defs):
    g = G(defs)
    g.add("IPAdapterFaceID", [], inputs=[], outputs=[])
    g.add("StyleStudioSomethingNew", [], inputs=[], outputs=[])
    g.add("TotallyUnknownNode", [], inputs=[], outputs=[])
    msgs = [str(p) for p in ui_to_api(g.wf(), defs).problems]
    assert any("IPAdapterFaceID" in m and "ComfyUI_IPAdapter_plus" in m for m in msgs), msgs
    assert any("StyleStudioSomethingNew" in m and "ComfyUI-StyleStudio" in m for m in msgs), msgs
    assert any("TotallyUnknownNode" in m and "installed" in m for m in msgs), msgs


def test_widget_value_mismatches_are_reported(defs):
    # one value missing -> default + warning
    g, *_ = _chain(defs, teacher_widgets=(0.0, 0.4, False))
    ps = ui_to_api(g.wf(), defs).problems
    assert [p.severity for p in ps] == ["warning"] and "return_teacher" in ps[0].message
    # trailing extra value -> warning
    g, *_ = _chain(defs, teacher_widgets=(0.0, 0.4, False, False, "extra"))
    assert [p.severity for p in ui_to_api(g.wf(), defs).problems] == ["warning"]
    # a value of the wrong kind (reordered inputs) -> error
    g, *_ = _chain(defs, teacher_widgets=(False, 0.4, 0.0, False))
    ps = ui_to_api(g.wf(), defs).problems
    assert [p.kind for p in ps if p.severity == "error"] == ["widget_values"], ps


def test_renamed_stylestudio_input_breaks_the_shipped_workflows(defs):
    """What a rename would do: the converter (and the unit test above) report it."""
    renamed = dict(defs)
    d = defs["StyleStudioCrossModalAdaIN"]
    req = dict(d.inputs["required"])
    req["weight"] = req.pop("strength")
    renamed["StyleStudioCrossModalAdaIN"] = NodeDef(inputs={"required": req}, outputs=d.outputs)
    conv = ui_to_api(wf("stylestudio_sdxl_ipadapter"), renamed)
    assert any(p.kind == "unknown_input" and "strength" in p.message for p in conv.errors), conv.problems


def test_group_nodes_are_unsupported_subgraphs_are_flattened(defs):
    g = G(defs)
    g.add("workflow>my group", [], inputs=[], outputs=[])
    g.add("1b2c3d4e-0000-4000-8000-000000000000", [], inputs=[], outputs=[])
    data = g.wf()
    data["definitions"] = {"subgraphs": [{"id": "1b2c3d4e-0000-4000-8000-000000000000", "nodes": [],
                                          "links": []}]}
    conv = ui_to_api(data, defs)
    assert [p.kind for p in conv.problems] == ["unsupported"] and "group node" in conv.problems[0].message
    assert conv.prompt == {}  # an empty subgraph sends nothing (tests/test_cli_editor_files.py: real ones)


def test_broken_links_are_reported():
    data = copy.deepcopy(wf("stylestudio_sdxl_ipadapter"))
    data["links"][0][3] = 999                              # link to a node that does not exist
    data["nodes"][0]["outputs"][0]["links"].append(4242)   # output lists an unknown link
    data["links"][1][5] = "LATENT"                         # wrong link type
    kinds = sorted(p.kind for p in check_links(data))
    assert kinds.count("broken_link") >= 2 and "type_mismatch" in kinds, kinds


def test_list_widget_values_are_wrapped_and_dicts_accepted():
    defs = {"X": NodeDef(inputs={"required": {"a": ("INT", {}), "b": ("COMBO", {"options": [[1, 2]]})}},
                         outputs=())}
    node = {"id": 1, "type": "X", "mode": 0, "inputs": [], "outputs": [], "widgets_values": [3, [1, 2]]}
    p = ui_to_api({"nodes": [node], "links": []}, defs).prompt
    assert p["1"]["inputs"] == {"a": 3, "b": {"__value__": [1, 2]}}
    node["widgets_values"] = {"a": 5, "b": "x"}
    assert ui_to_api({"nodes": [node], "links": []}, defs).prompt["1"]["inputs"] == {"a": 5, "b": "x"}


# --- --set and the package ---------------------------------------------------------------------------------------
def test_set_expressions():
    assert runner.parse_set("KSampler.seed=7") == ("KSampler", "seed", 7)
    assert runner.parse_set("Load v1.5.ckpt_name=a.safetensors") == ("Load v1.5", "ckpt_name", "a.safetensors")
    assert runner.parse_set('12.text="a cat"') == ("12", "text", "a cat")
    assert runner.parse_set("3.flag=true") == ("3", "flag", True)
    with pytest.raises(runner.SetError):
        runner.parse_set("nodot=1")
    prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": 1}, "_meta": {"title": "Sampler A"}},
              "4": {"class_type": "KSampler", "inputs": {"seed": 1}, "_meta": {"title": "Sampler B"}},
              "5": {"class_type": "VAEDecode", "inputs": {}, "_meta": {"title": "VAE Decode"}}}
    runner.apply_sets(prompt, ["Sampler B.seed=9", "3.cfg=4.5", "VAEDecode.class_type=MyDecode"])
    assert prompt["4"]["inputs"]["seed"] == 9 and prompt["3"]["inputs"]["cfg"] == 4.5
    assert prompt["5"]["class_type"] == "MyDecode"
    with pytest.raises(runner.SetError, match="2 KSampler nodes"):
        runner.apply_sets(prompt, ["KSampler.seed=1"])
    with pytest.raises(runner.SetError, match="no node"):
        runner.apply_sets(prompt, ["Nope.seed=1"])


def test_cli_package_imports_no_comfyui():
    code = ("import sys; sys.path.insert(0, %r); import stylestudio_cli, stylestudio_cli.__main__, "
            "stylestudio_cli.runner, stylestudio_cli.checks, stylestudio_cli.comfy_env; "
            "bad = [m for m in ('comfy', 'nodes', 'folder_paths', 'execution', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)") % str(REPO)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(WF_DIR))
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_without_comfyui_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    from stylestudio_cli.__main__ import main
    assert main(["validate", str(WORKFLOWS[0])]) == 2
    assert "COMFYUI_PATH" in capsys.readouterr().err


def test_console_entry_point_declared():
    import tomllib
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["stylestudio"] == "stylestudio_cli.__main__:main"
    assert "stylestudio_cli" in data["tool"]["setuptools"]["packages"]


# ==============================================================================================================
# host tier
# ==============================================================================================================
host_tier = pytest.mark.skipif(not HOST, reason=HOST_SKIP)
needs_ipadapter = pytest.mark.skipif(not (HOST and IPA), reason=HOST_SKIP if not HOST else IPA_SKIP)


@pytest.fixture(scope="module")
def comfy_env(host):
    """The headless loader of the CLI on the host's already-initialised ComfyUI (reused, not initialised again)."""
    from stylestudio_cli.comfy_env import load_comfyui
    extra = [str(REPO)] + ([os.environ["IPADAPTER_PLUS_PATH"]] if IPA else [])
    before = dict(sys.modules["nodes"].NODE_CLASS_MAPPINGS) if "nodes" in sys.modules else None
    env = load_comfyui(os.environ["COMFYUI_PATH"], extra_custom_nodes=extra)
    assert env.reused, "the CLI initialised ComfyUI a second time"
    if before is not None:  # nothing registered was replaced
        assert all(env.nodes.NODE_CLASS_MAPPINGS[k] is v for k, v in before.items())
    return env


@pytest.fixture
def model_files(comfy_env, tmp_path):
    """Empty model files with the documented names, in temp model folders registered with folder_paths, and the
    style images in a temp input folder; everything is removed again afterwards."""
    from PIL import Image
    fp = comfy_env.folder_paths
    added = []
    for fname, folder in DOCUMENTED.items():
        d = tmp_path / "models" / folder
        d.mkdir(parents=True, exist_ok=True)
        (d / fname).write_bytes(b"")
        if (folder, str(d)) not in added:
            fp.add_model_folder_path(folder, str(d))
            added.append((folder, str(d)))
    inp = tmp_path / "input"
    inp.mkdir()
    for name in ("stylestudio_style.png", "stylestudio_style_a.png", "stylestudio_style_b.png",
                 "stylestudio_style_c.png"):
        Image.new("RGB", (96, 80), (180, 90, 40)).save(inp / name)
    old_input = fp.get_input_directory()
    fp.set_input_directory(str(inp))
    for folder, _ in added:
        fp.filename_list_cache.pop(folder, None)
    try:
        yield tmp_path
    finally:
        fp.set_input_directory(old_input)
        for folder, d in added:
            paths = fp.folder_names_and_paths[folder][0]
            if d in paths:
                paths.remove(d)
            fp.filename_list_cache.pop(folder, None)


@needs_ipadapter
@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_shipped_workflow_validates_against_real_comfyui(path, comfy_env, model_files):
    report = runner.validate(comfy_env, load(path))
    assert report.ok and not report.problems, "\n" + report.format()
    assert report.good_outputs
    # the converter's prompt is exactly what ComfyUI accepted: every class known, every widget input filled
    for nid, node in report.prompt.items():
        cls = comfy_env.nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
        assert set(cls.INPUT_TYPES().get("required", {})) <= set(node["inputs"]), nid


@needs_ipadapter
def test_cli_validate_exit_codes_and_reports(comfy_env, model_files, tmp_path, capsys):
    from stylestudio_cli.__main__ import main
    common = ["--comfyui", os.environ["COMFYUI_PATH"], "--extra-custom-nodes", str(REPO), "--input-dir",
              str(model_files / "input")]
    api = tmp_path / "api.json"
    assert main(["validate", str(WF_DIR / "stylestudio_sdxl_ipadapter.json"), *common, "--api-out", str(api)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["validate", str(api), *common]) == 0  # API-format files validate too
    capsys.readouterr()

    bad = wf("stylestudio_sdxl_ipadapter")
    nodes = {n["type"]: n for n in bad["nodes"]}
    nodes["KSampler"]["widgets_values"][3] = 150.0                       # cfg above ComfyUI's max
    nodes["CheckpointLoaderSimple"]["widgets_values"] = ["no_such_model.safetensors"]
    nodes["StyleStudioTeacherLayout"]["inputs"][2]["name"] = "end_percent"   # a renamed input
    nodes["StyleStudioTeacherLayout"]["inputs"][2]["widget"]["name"] = "end_percent"
    nodes["StyleStudioCrossModalAdaIN"]["type"] = "StyleStudioNotANode"
    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps(bad))
    assert main(["validate", str(bad_path), *common]) == 1
    out = capsys.readouterr().out
    assert "'cfg' = 150.0 is above the maximum" in out
    assert "model file 'no_such_model.safetensors' (ckpt_name) not found" in out and "checkpoints" in out
    assert "input 'end_percent' is not an input of StyleStudioTeacherLayout" in out
    assert "unknown node type 'StyleStudioNotANode'" in out and "ComfyUI-StyleStudio" in out
    assert "NOT valid" in out

    # --set fixes it before validation; a bad --set is a usage error
    fixed = ["--set", "KSampler.cfg=6", "--set", "Load Checkpoint.ckpt_name=sd_xl_base_1.0.safetensors"]
    report = runner.validate(comfy_env, bad, fixed[1::2])
    assert not [p for p in report.errors if p.kind in ("out_of_range", "missing_model")]
    assert main(["validate", str(WF_DIR / "stylestudio_sd15.json"), *common, "--set", "Nope.x=1"]) == 2


@needs_ipadapter
def test_validate_matches_comfyui_on_bypass_and_mute(comfy_env, model_files):
    """Bypassing AdaIN keeps the graph valid (the teacher takes the IPAdapter model); muting it leaves the teacher
    without a model, which ComfyUI itself rejects."""
    data = wf("stylestudio_sdxl_ipadapter")
    adain = by_type(data, "StyleStudioCrossModalAdaIN")[0]
    adain["mode"] = convert.MODE_BYPASS
    report = runner.validate(comfy_env, data)
    assert report.ok, report.format()
    teacher_id = str(by_type(data, "StyleStudioTeacherLayout")[0]["id"])
    ipa_id = str(by_type(data, "IPAdapterAdvanced")[0]["id"])
    assert report.prompt[teacher_id]["inputs"]["model"] == [ipa_id, 0]
    adain["mode"] = convert.MODE_MUTED
    report = runner.validate(comfy_env, data)
    assert not report.ok
    assert any(p.node_id == teacher_id and "muted" in p.message for p in report.errors), report.format()


@host_tier
def test_bypassed_unknown_nodes_need_not_be_installed(comfy_env, model_files):
    """With the IPAdapter nodes bypassed the graph runs on core + StyleStudio nodes only (whether or not
    IPAdapter_plus is installed): the bypass passes the checkpoint's MODEL through both of them."""
    data = wf("stylestudio_sdxl_ipadapter")
    for node in data["nodes"]:
        if node["type"].startswith("IPAdapter"):
            node["mode"] = convert.MODE_BYPASS
    report = runner.validate(comfy_env, data)
    assert report.ok, report.format()
    ckpt = str(by_type(data, "CheckpointLoaderSimple")[0]["id"])
    adain = str(by_type(data, "StyleStudioCrossModalAdaIN")[0]["id"])
    assert report.prompt[adain]["inputs"]["model"] == [ckpt, 0]
    assert not any(n["class_type"].startswith("IPAdapter") for n in report.prompt.values())


# --- run, end to end, with tiny models ----------------------------------------------------------------------------
def _register_tiny_nodes(host, arch, tmp_path):
    """Test-only node classes that hand the graph tiny random-weight models (real checkpoints cannot be
    substituted through the checkpoint loaders: model detection needs real sizes)."""
    import zlib as _z

    import torch
    import comfy.clip_vision
    import nodes
    from hosts import _tiny_weights as tw

    class _NoClip:
        pass

    class _TinyVAE:
        def decode(self, samples):
            x = torch.nn.functional.interpolate(samples[:, :3].float(), scale_factor=8, mode="nearest")
            return torch.sigmoid(x).movedim(1, -1)

    class TinyCheckpoint:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}
        RETURN_TYPES = ("MODEL", "CLIP", "VAE")
        FUNCTION = "load"
        CATEGORY = "_test"

        def load(self):
            return host.tiny_model(arch), _NoClip(), _TinyVAE()

    class TinyTextEncode:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}}
        RETURN_TYPES = ("CONDITIONING",)
        FUNCTION = "encode"
        CATEGORY = "_test"

        def encode(self, text, clip):
            return (host.conditioning(arch, _z.crc32(text.encode()) % 10000),)

    cfg = {"hidden_act": "gelu", "hidden_size": 64, "image_size": 224, "intermediate_size": 128,
           "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 2,
           "num_channels": 3, "num_hidden_layers": 2, "patch_size": 32, "projection_dim": 64}
    cfg_path = tmp_path / "tiny_clip_vision.json"
    cfg_path.write_text(json.dumps(cfg))
    ipa_dir = tmp_path / "models" / "ipadapter"
    ipa_name = f"tiny-random-ip-adapter-plus_{arch}.safetensors"
    tw.write_random_ipadapter(str(ipa_dir / ipa_name), arch, 32, plus=True, clip_embeddings_dim=64, seed=5)

    class TinyIPAdapterLoader:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"model": ("MODEL",)}, "optional": {"ipadapter": ("IPADAPTER",)}}
        RETURN_TYPES = ("MODEL", "IPADAPTER")
        FUNCTION = "load"
        CATEGORY = "_test"

        def load(self, model, ipadapter=None):
            cv = comfy.clip_vision.ClipVisionModel(str(cfg_path))
            tw.init_weights_(cv.model, seed=3)
            loader = nodes.NODE_CLASS_MAPPINGS["IPAdapterModelLoader"]()
            ipa = getattr(loader, loader.FUNCTION)(ipa_name)[0]
            return model, {"ipadapter": {"file": ipa_name, "model": ipa}, "clipvision": {"file": "tiny", "model": cv},
                           "insightface": {"provider": None, "model": None}}

    new = {"_TestTinyCheckpoint": TinyCheckpoint, "_TestTinyTextEncode": TinyTextEncode,
           "_TestTinyIPAdapterLoader": TinyIPAdapterLoader}
    nodes.NODE_CLASS_MAPPINGS.update(new)
    return new, str(ipa_dir)


@needs_ipadapter
@pytest.mark.parametrize("name,arch", [("stylestudio_sd15", "sd15"), ("stylestudio_sdxl_ipadapter", "sdxl")])
def test_run_executes_a_shipped_workflow_end_to_end(name, arch, host, comfy_env, model_files, tmp_path, capsys):
    import nodes
    from stylestudio_cli.__main__ import main
    fp = comfy_env.folder_paths
    new, ipa_dir = _register_tiny_nodes(host, arch, tmp_path)
    fp.add_model_folder_path("ipadapter", ipa_dir)
    fp.filename_list_cache.pop("ipadapter", None)
    out = tmp_path / "out"
    try:
        rc = main(["run", str(WF_DIR / f"{name}.json"), "--comfyui", os.environ["COMFYUI_PATH"],
                   "--input-dir", str(model_files / "input"), "--out", str(out),
                   "--set", "Load Checkpoint.class_type=_TestTinyCheckpoint",
                   "--set", "Positive prompt.class_type=_TestTinyTextEncode",
                   "--set", "Negative prompt.class_type=_TestTinyTextEncode",
                   "--set", "IPAdapter Unified Loader.class_type=_TestTinyIPAdapterLoader",
                   "--set", "KSampler.steps=3", "--set", "EmptyLatentImage.width=64",
                   "--set", "EmptyLatentImage.height=64"])
    finally:
        for k in new:
            nodes.NODE_CLASS_MAPPINGS.pop(k, None)
        fp.folder_names_and_paths["ipadapter"][0].remove(ipa_dir)
        fp.filename_list_cache.pop("ipadapter", None)
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    files = sorted(out.rglob("*.png"))
    assert len(files) == 1, captured.out
    assert str(files[0]) in captured.out and "wrote" in captured.out
    assert "3/3" in captured.err  # the progress bar reached the last step
    from PIL import Image
    with Image.open(files[0]) as im:
        assert im.size == (64, 64)
        meta = im.info
    assert json.loads(meta["workflow"])["nodes"], "the PNG does not carry the workflow"
    prompt = json.loads(meta["prompt"])
    assert {v["class_type"] for v in prompt.values()} >= {"IPAdapterAdvanced", "StyleStudioCrossModalAdaIN",
                                                          "StyleStudioTeacherLayout", "KSampler", "SaveImage"}


# --- files the real editor saved (tests/fixtures/editor_saved, made by the browser tier) ---------------------------
EDITOR_SAVED = REPO / "tests" / "fixtures" / "editor_saved"
EDITOR_VALID = ["sdxl_saved_unchanged", "sd15_saved_unchanged", "sdxl_nested_subgraph_bypass",
                "sdxl_subgraph_node_bypassed", "sdxl_subgraph_node_muted", "sweep_primitive_muted"]


@needs_ipadapter
@pytest.mark.parametrize("name", EDITOR_VALID)
def test_editor_saved_files_validate_against_real_comfyui(name, comfy_env, model_files):
    """What `validate`/`run` refused before: every editor-saved file (upload buttons, control widgets, subgraphs
    with `outer:inner` ids) passes the CLI's checks and ComfyUI's own validate_prompt, with exactly the prompt
    the editor's graphToPrompt made."""
    report = runner.validate(comfy_env, load(EDITOR_SAVED / f"{name}.json"))
    assert report.ok and not report.errors, "\n" + report.format()
    editor = load(EDITOR_SAVED / f"{name}.prompt.json")
    assert set(report.prompt) == set(editor)
    for nid, node in editor.items():
        assert report.prompt[nid]["class_type"] == node["class_type"]
        assert report.prompt[nid]["inputs"] == node["inputs"], nid


@needs_ipadapter
def test_editor_saved_subgraph_with_a_muted_node_is_refused_with_the_reason(comfy_env, model_files):
    report = runner.validate(comfy_env, load(EDITOR_SAVED / "sweep_branch_subgraph_muted.json"))
    assert not report.ok
    ks = next(k for k, v in report.prompt.items() if v["class_type"] == "KSampler" and ":" in k)
    assert any(p.node_id == ks and p.input == "model" and "muted" in p.message for p in report.errors), \
        report.format()
