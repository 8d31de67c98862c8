"""``stylestudio doctor --comfyui PATH``: the one command to run when something is wrong.

It loads the user's ComfyUI in-process (headless, no server; :mod:`stylestudio_cli.comfy_env`) with its custom
nodes, then reports:

* versions: ComfyUI (against the pack's ``requires-comfyui``), torch, the device ComfyUI samples on, the editor
  frontend package (against the version ComfyUI's requirements.txt pins), the pack, ComfyUI_IPAdapter_plus (its
  git commit when it is a checkout);
* whether the StyleStudio nodes (the three method nodes and the two native style-adapter nodes) and
  ComfyUI_IPAdapter_plus's nodes are registered (and ComfyUI's import errors if not);
* the native path (always): a tiny random-weight adapter file in the published key layout (CSGO for SDXL,
  IP-Adapter for SD1.5) written to a temporary ``models/ipadapter`` folder registered with ``folder_paths``, a
  tiny CLIP vision built by ComfyUI's own ``comfy.clip_vision``, loaded and applied through the registered
  "StyleStudio Style Adapter Loader" / "StyleStudio Apply Style Adapter" nodes: the format is detected, the
  patches carry the stacked-callback protocol the pack's routing recognises, weight 0 is bit-identical to the
  input model, and the method's facts below hold on it;
* the IPAdapter_plus path (when it is installed): whether IPAdapter_plus patches a model with the
  stacked-callback protocol the pack recognises (its own recogniser, ``stylestudio_core.routing.
  has_callback_protocol``, on a real IPAdapter_plus patch), and the method's facts on it;
* the method's facts, sampled for a few steps on tiny random-weight SD1.5 and SDXL UNets (real block layouts)
  on ComfyUI's device, through the registered nodes: effect off = bit-identical for each node, the teacher rows
  equal a plain run without the style adapter, style_cfg = cfg is plain style-based CFG, and split scales
  follow ``ε(∅t,s⁻) + cfg·(ε(t,s⁻) − ε(∅t,s⁻)) + style_cfg·(ε(t,s⁺) − ε(t,s⁻))``.

ComfyUI_IPAdapter_plus is optional: the pack's native adapter nodes do not need it. The rule: when its nodes are
not registered and it did not fail to import, its row is a WARN ("not installed: the native adapter nodes are
used") and its checks are skipped, so the exit status depends on the native path; it is a FAIL when it is
installed but failed to import, when its patches are not the kind the pack recognises, or when it is missing and
``--require-ipadapter-plus`` was given (for set-ups whose workflows use IPAdapter_plus's nodes).

It prints a short table and exits 0 when nothing failed, 1 on any failure, 2 when ComfyUI cannot be loaded.
Nothing is written outside a temporary folder (the random adapter files, the CLIP vision config), which is
removed at the end.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

SHIPPED_NODES = ("StyleStudioCrossModalAdaIN", "StyleStudioTeacherLayout", "StyleStudioStyleGuidance")
ADAIN, TEACHER, GUIDANCE = SHIPPED_NODES
NATIVE_NODES = ("StyleStudioStyleAdapterLoader", "StyleStudioApplyStyleAdapter")
LOADER, APPLY = NATIVE_NODES
PACK_NODES = SHIPPED_NODES + NATIVE_NODES
IPA_NODES = ("IPAdapterModelLoader", "IPAdapterEmbeds")
PASS, FAIL, WARN, INFO, SKIP = "PASS", "FAIL", "WARN", "info", "skip"
ARCHS = ("sd15", "sdxl")
IPA_CLIP_DIM = 64  # image-embedding width of the random IP-Adapter (free for base adapters)


@dataclass
class Row:
    check: str
    status: str
    detail: str


@dataclass
class Report:
    rows: list = field(default_factory=list)

    def add(self, check: str, status: str, detail: str = "") -> Row:
        row = Row(check, status, detail)
        self.rows.append(row)
        return row

    @property
    def failures(self) -> list:
        return [r for r in self.rows if r.status == FAIL]

    def format(self) -> str:
        width = max(len(r.check) for r in self.rows) if self.rows else 10
        lines = [f"{'check':<{width}}  {'result':<6}  detail", f"{'-' * width}  ------  ------"]
        for r in self.rows:
            detail = r.detail.replace("\n", "\n" + " " * (width + 10))
            lines.append(f"{r.check:<{width}}  {r.status:<6}  {detail}")
        return "\n".join(lines)


HELP = """Check the ComfyUI + StyleStudio set-up: versions, loading, and the method's facts on tiny random models.

Two style sources are checked: the pack's native adapter nodes (always; a tiny CSGO / IP-Adapter file and a tiny
CLIP vision) and ComfyUI_IPAdapter_plus (when installed). IPAdapter_plus is optional: when it is not installed its
row is a WARN ("not installed: the native adapter nodes are used"), its checks are skipped and the exit status
depends on the native checks. It is a FAIL when it is installed but fails to import, when its patches are not the
kind the pack recognises, or when it is missing and --require-ipadapter-plus is given.

Exit status: 0 = no FAIL row, 1 = at least one FAIL row (each says what to do), 2 = ComfyUI cannot be loaded."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--comfyui", metavar="PATH", default=None,
                   help="ComfyUI checkout to load in-process (default: $COMFYUI_PATH)")
    p.add_argument("--extra-custom-nodes", metavar="DIR", action="append", default=[],
                   help="also load this custom node pack folder (repeatable)")
    p.add_argument("--no-custom-nodes", action="store_true",
                   help="do not load the packs in ComfyUI's custom_nodes folder (only --extra-custom-nodes)")
    dev = p.add_mutually_exclusive_group()
    dev.add_argument("--cpu", dest="cpu", action="store_true", default=None,
                     help="run on the CPU (default: ComfyUI's device, the GPU when there is one)")
    dev.add_argument("--gpu", dest="cpu", action="store_false", help="never force --cpu")
    p.add_argument("--comfy-args", metavar="ARGS", default=None,
                   help="more ComfyUI command-line flags, as one string, e.g. \"--lowvram\"")
    p.add_argument("--steps", type=int, default=4, help="sampling steps per check (default 4)")
    p.add_argument("--arch", choices=("all",) + ARCHS, default="all",
                   help="base-model layouts to check the method on (default: all)")
    p.add_argument("--require-ipadapter-plus", action="store_true",
                   help="fail when ComfyUI_IPAdapter_plus is not installed (default: it is optional -- without it "
                        "its row is a WARN, its checks are skipped and the exit status depends on the native "
                        "adapter checks; an IPAdapter_plus that is installed but fails to import or patches "
                        "models in a way the pack does not recognise is always a FAIL)")
    p.add_argument("-v", "--verbose", action="store_true", help="show ComfyUI's log and full tracebacks")


# --- versions -------------------------------------------------------------------------------------------------
def _version_tuple(text: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _git_commit(path: str) -> str | None:
    if not os.path.exists(os.path.join(path, ".git")):
        return None
    try:
        out = subprocess.run(["git", "-C", path, "log", "-1", "--format=%h %cs"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _read_pyproject(folder: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return {}
    try:
        with open(os.path.join(folder, "pyproject.toml"), "rb") as f:
            return tomllib.load(f)
    except (OSError, ValueError):
        return {}


def _frontend(report: Report, root: str) -> None:
    from importlib import metadata
    try:
        installed = metadata.version("comfyui-frontend-package")
    except metadata.PackageNotFoundError:
        installed = None
    pinned = None
    try:
        with open(os.path.join(root, "requirements.txt"), encoding="utf-8") as f:
            m = re.search(r"^comfyui-frontend-package\s*==\s*([\w.]+)", f.read(), re.M)
            pinned = m.group(1) if m else None
    except OSError:
        pass
    if installed is None:
        report.add("frontend", WARN, "comfyui-frontend-package not installed: the editor (help panel, translations) "
                                     "needs it — pip install -r ComfyUI/requirements.txt")
    elif pinned and _version_tuple(installed) < _version_tuple(pinned):
        report.add("frontend", WARN, f"{installed}, older than the {pinned} this ComfyUI pins — "
                                     "pip install -r ComfyUI/requirements.txt")
    else:
        report.add("frontend", INFO, installed + (f" (ComfyUI pins {pinned})" if pinned else ""))


def _device(report: Report) -> None:
    import torch
    import comfy.model_management as mm
    device = mm.get_torch_device()
    detail = str(device)
    try:
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            detail += f" {props.name}, {props.total_memory / 2**30:.0f} GiB"
        detail += f", vram state {mm.vram_state.name}"
    except Exception:  # noqa: BLE001 - informational only
        pass
    report.add("device", INFO, detail)
    cuda = getattr(torch.version, "cuda", None)
    report.add("torch", INFO, torch.__version__ + (f" (CUDA {cuda})" if cuda else ""))


# --- what is loaded -------------------------------------------------------------------------------------------
def _pack_module(nodes_module):
    """The package ComfyUI loaded the StyleStudio nodes from (any folder name), or None."""
    for node_id in SHIPPED_NODES:
        cls = nodes_module.NODE_CLASS_MAPPINGS.get(node_id)
        if cls is None:
            continue
        package = cls.__module__.rsplit(".nodes.", 1)[0]
        module = sys.modules.get(package)
        if module is not None and getattr(module, "__file__", None):
            return module
    return None


def _import_errors(env, needle: str) -> str:
    lines = [ln for ln in env.log_lines if needle.lower() in ln.lower()
             and ("IMPORT FAILED" in ln or "Cannot import" in ln or "Error" in ln or "rror:" in ln)]
    return ("; ComfyUI's log: " + " | ".join(ln[-200:] for ln in lines[-3:])) if lines else ""


def _check_pack(report: Report, env):
    import comfyui_version
    pack = _pack_module(env.nodes)
    missing = [n for n in PACK_NODES if n not in env.nodes.NODE_CLASS_MAPPINGS]
    if pack is None or missing:
        report.add("StyleStudio pack", FAIL,
                   f"nodes not registered ({', '.join(missing)}): put ComfyUI-StyleStudio into ComfyUI/custom_nodes "
                   "(or pass --extra-custom-nodes DIR)" + _import_errors(env, "StyleStudio"))
        return None
    folder = os.path.dirname(pack.__file__)
    project = _read_pyproject(folder)
    version = project.get("project", {}).get("version", "?")
    commit = _git_commit(folder)
    via = "comfy_entrypoint (V3)" if not hasattr(pack, "NODE_CLASS_MAPPINGS") else "NODE_CLASS_MAPPINGS"
    report.add("StyleStudio pack", PASS, f"{version}{' ' + commit if commit else ''} at {folder}, "
                                         f"{len(PACK_NODES)} nodes via {via}")
    required = project.get("tool", {}).get("comfy", {}).get("requires-comfyui", "")
    running = comfyui_version.__version__
    if required and _version_tuple(running) < _version_tuple(required):
        report.add("ComfyUI", FAIL, f"{running} at {env.root}: the pack needs {required} — update ComfyUI")
    else:
        report.add("ComfyUI", PASS, f"{running} at {env.root}" + (f" (pack requires {required})" if required else ""))
    return pack


def _check_ipadapter(report: Report, env, required: bool = False) -> bool:
    """True when IPAdapter_plus's nodes are registered. Missing is a WARN (the native adapter nodes replace it)
    unless ``required``; installed but failing to import is a FAIL either way."""
    missing = [n for n in IPA_NODES if n not in env.nodes.NODE_CLASS_MAPPINGS]
    if missing:
        failed = [p for p in env.pack_failures if "ipadapter" in os.path.basename(p.rstrip("/\\")).lower()]
        errors = _import_errors(env, "IPAdapter")
        if failed:
            report.add("IPAdapter_plus", FAIL, f"installed at {failed[0]} but failed to import (no "
                       + ", ".join(missing) + " node): fix or remove it, its workflows cannot run" + errors)
        elif required:
            report.add("IPAdapter_plus", FAIL,
                       "not installed (no " + ", ".join(missing) + " node), and --require-ipadapter-plus was given: "
                       "install ComfyUI_IPAdapter_plus into ComfyUI/custom_nodes "
                       "(https://github.com/cubiq/ComfyUI_IPAdapter_plus)" + errors)
        else:
            report.add("IPAdapter_plus", WARN,
                       "not installed: the native adapter nodes are used (StyleStudio Style Adapter Loader + "
                       "StyleStudio Apply Style Adapter); install ComfyUI_IPAdapter_plus only for workflows that "
                       "use its nodes")
        return False
    module = sys.modules.get(env.nodes.NODE_CLASS_MAPPINGS["IPAdapterEmbeds"].__module__)
    folder = os.path.dirname(getattr(module, "__file__", "") or "")
    commit = _git_commit(folder) if folder else None
    report.add("IPAdapter_plus", PASS, f"{'commit ' + commit if commit else 'not a git checkout'} at {folder}")
    return True


# --- tiny random models ----------------------------------------------------------------------------------------
# Real SD1.5 / SDXL block layouts (transformer counts, block ids, context widths), tiny widths, depth 1; the same
# recipe as the test suite's host tier.
def _unet_config(arch: str) -> dict:
    common = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
              "legacy": False, "in_channels": 4, "model_channels": 32, "use_temporal_attention": False,
              "use_temporal_resblock": False}
    if arch == "sdxl":
        return {**common, "num_classes": "sequential", "adm_in_channels": 2816, "num_res_blocks": [2, 2, 2],
                "transformer_depth": [0, 0, 1, 1, 1, 1], "channel_mult": [1, 2, 4], "transformer_depth_middle": 1,
                "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 32,
                "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1]}
    return {**common, "adm_in_channels": None, "num_res_blocks": [2, 2, 2, 2],
            "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
            "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
            "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]}


def _init_weights(module, seed: int) -> None:
    """comfy.ops layers are left uninitialised: fill every parameter from a CPU generator (same values on every
    device): weights ~ N(0, 1/fan_in), biases 0, norms 1/0."""
    import torch
    g = torch.Generator().manual_seed(seed)
    norms = {id(p) for m in module.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))
             for p in m.parameters(recurse=False)}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if id(p) in norms:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            elif p.dim() >= 2:
                p.copy_((torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())).to(p.device, p.dtype))
            else:
                p.copy_((0.02 * torch.randn(p.shape, generator=g)).to(p.device, p.dtype))


def tiny_model(arch: str, seed: int = 1234):
    import torch
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    conf = (sm.SDXL if arch == "sdxl" else sm.SD15)(_unet_config(arch))
    if arch == "sdxl":  # BASE.__init__ resets the head settings to the class defaults
        conf.unet_config["num_heads"], conf.unet_config["num_head_channels"] = -1, 32
    conf.set_inference_dtype(torch.float32, None)
    device = mm.get_torch_device()
    model = conf.get_model({}, device=device)
    _init_weights(model.diffusion_model, seed)
    model.eval()
    offload = mm.unet_offload_device() if device.type != "cpu" else device
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=offload)


# (block, id, real depth, width multiplier) of every cross-attention layer in IPAdapter_plus's numbering
_IPA_LAYERS = {
    "sdxl": ([("input", 4, 2, 2), ("input", 5, 2, 2), ("input", 7, 10, 4), ("input", 8, 10, 4)]
             + [("output", i, 10, 4) for i in (0, 1, 2)] + [("output", i, 2, 2) for i in (3, 4, 5)]
             + [("middle", 0, 10, 4)]),
    "sd15": ([("input", 1, 1, 1), ("input", 2, 1, 1), ("input", 4, 1, 2), ("input", 5, 1, 2),
              ("input", 7, 1, 4), ("input", 8, 1, 4)]
             + [("output", i, 1, 4) for i in (3, 4, 5)] + [("output", i, 1, 2) for i in (6, 7, 8)]
             + [("output", i, 1, 1) for i in (9, 10, 11)] + [("middle", 0, 1, 4)]),
}


def write_random_ipadapter(path: str, arch: str, seed: int = 99) -> None:
    """A random-weight base IP-Adapter (4 tokens) in the standard file layout, sized for :func:`tiny_model`.
    Every layer of the real architecture is written (IPAdapter_plus tells the model family by the layer count);
    layers the depth-1 tiny model lacks get a width-1 placeholder that is never called."""
    import torch
    from safetensors.torch import save_file
    ctx = 2048 if arch == "sdxl" else 768
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return (torch.randn(shape, generator=g) / math.sqrt(shape[-1])).half()

    sd = {"image_proj.proj.weight": rnd(4 * ctx, IPA_CLIP_DIM), "image_proj.proj.bias": torch.zeros(4 * ctx).half(),
          "image_proj.norm.weight": torch.ones(ctx).half(), "image_proj.norm.bias": torch.zeros(ctx).half()}
    n = 0
    for _block, _bid, depth, mult in _IPA_LAYERS[arch]:
        for index in range(depth):
            width = 32 * mult if index == 0 else 1
            sd[f"ip_adapter.{2 * n + 1}.to_k_ip.weight"] = rnd(width, ctx)
            sd[f"ip_adapter.{2 * n + 1}.to_v_ip.weight"] = rnd(width, ctx)
            n += 1
    save_file({k: v.contiguous() for k, v in sd.items()}, path)


# --- tiny native adapter files and CLIP vision ------------------------------------------------------------------
#: The tiny CLIP vision: the keys of ComfyUI's clip_vision_config_*.json, shrunk (224 px input as the real
#: encoders, so ComfyUI's own preprocessing and centre crop run; 257 tokens of width 32, 24-wide image_embeds).
TINY_CLIP_VISION_CONFIG = {
    "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 32, "image_size": 224,
    "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model", "num_attention_heads": 2, "num_channels": 3, "num_hidden_layers": 3,
    "patch_size": 14, "projection_dim": 24, "torch_dtype": "float32",
}
#: which published format the native path checks on each layout: CSGO (the paper's adapter, SDXL only) and the
#: base IP-Adapter, so both projectors (Resampler / linear) and both CLIP features are exercised
NATIVE_FORMAT = {"sdxl": "csgo", "sd15": "ip_adapter"}
NATIVE_LABEL = {"csgo": "CSGO", "ip_adapter": "IP-Adapter"}


def tiny_clip_vision(folder: str, seed: int = 5):
    """A ``comfy.clip_vision.ClipVisionModel`` built by ComfyUI's own class from a shrunk config file (the real
    module tree), weights filled from a CPU generator."""
    import json

    import comfy.clip_vision
    path = os.path.join(folder, "stylestudio_doctor_clip_vision.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(TINY_CLIP_VISION_CONFIG, f)
    clip = comfy.clip_vision.ClipVisionModel(path)
    _init_weights(clip.model, seed)
    return clip


def write_random_native_adapter(path: str, fmt: str, arch: str, seed: int = 11) -> None:
    """A random-weight adapter in a published key layout, sized for :func:`tiny_model` and
    :data:`TINY_CLIP_VISION_CONFIG`, every layer of the real numbering written (width 1 where the depth-1 tiny
    model has no such layer):

    * ``"csgo"``: ``style_image_proj.*`` Resampler (32 tokens over penultimate hidden states; one 64-dim head,
      depth 1), ``content_image_proj.*`` (ignored by the loader), ``ip_adapter`` layers for the down blocks
      (content branch) and up blocks (style branch), none for the middle block;
    * ``"ip_adapter"``: ``image_proj.proj`` + ``image_proj.norm`` (4 tokens over image_embeds) and all layers.
    Norms and biases are random, so the unconditional tokens are not trivially zero."""
    import torch
    from safetensors.torch import save_file
    ctx = 2048 if arch == "sdxl" else 768
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=None):
        return (torch.randn(shape, generator=g) * (std if std is not None else shape[-1] ** -0.5)).half()

    def norm(key, width):
        sd[key + ".weight"] = (1 + 0.1 * torch.randn(width, generator=g)).half()
        sd[key + ".bias"] = (0.1 * torch.randn(width, generator=g)).half()

    sd = {}
    hidden, embeds = TINY_CLIP_VISION_CONFIG["hidden_size"], TINY_CLIP_VISION_CONFIG["projection_dim"]
    if fmt == "csgo":
        p, dim, inner = "style_image_proj.", 64, 64
        sd[p + "latents"] = rnd(1, 32, dim, std=dim ** -0.5)
        sd[p + "proj_in.weight"], sd[p + "proj_in.bias"] = rnd(dim, hidden), rnd(dim, std=0.1)
        sd[p + "proj_out.weight"], sd[p + "proj_out.bias"] = rnd(ctx, dim), rnd(ctx, std=0.1)
        norm(p + "norm_out", ctx)
        norm(p + "layers.0.0.norm1", dim)
        norm(p + "layers.0.0.norm2", dim)
        sd[p + "layers.0.0.to_q.weight"] = rnd(inner, dim)
        sd[p + "layers.0.0.to_kv.weight"] = rnd(2 * inner, dim)
        sd[p + "layers.0.0.to_out.weight"] = rnd(dim, inner)
        norm(p + "layers.0.1.0", dim)
        sd[p + "layers.0.1.1.weight"], sd[p + "layers.0.1.3.weight"] = rnd(4 * dim, dim), rnd(dim, 4 * dim)
        sd["content_image_proj.proj.weight"] = rnd(4 * ctx, hidden)
        sd["content_image_proj.proj.bias"] = rnd(4 * ctx, std=0.1)
        norm("content_image_proj.norm", ctx)
    else:
        sd["image_proj.proj.weight"], sd["image_proj.proj.bias"] = rnd(4 * ctx, embeds), rnd(4 * ctx, std=0.1)
        norm("image_proj.norm", ctx)
    n = 0
    for block, _bid, depth, mult in _IPA_LAYERS[arch]:
        for index in range(depth):
            if not (fmt == "csgo" and block == "middle"):
                width = 32 * mult if index == 0 else 1
                sd[f"ip_adapter.{2 * n + 1}.to_k_ip.weight"] = rnd(width, ctx)
                sd[f"ip_adapter.{2 * n + 1}.to_v_ip.weight"] = rnd(width, ctx)
            n += 1
    save_file({k: v.contiguous() for k, v in sd.items()}, path)


def register_adapter_folder(env, folder: str) -> None:
    """Make ``folder`` (a temporary models/ipadapter) one of ComfyUI's ``ipadapter`` model folders. The loader's
    schema registers the folder name with the model file extensions when no other pack did, as in the editor."""
    folder_paths = env.folder_paths
    loader = env.nodes.NODE_CLASS_MAPPINGS.get(LOADER)
    if loader is not None:
        loader.INPUT_TYPES()
    if "ipadapter" not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths["ipadapter"] = ([], set(folder_paths.supported_pt_extensions))
    folder_paths.add_model_folder_path("ipadapter", folder)


# --- the checks on a model ------------------------------------------------------------------------------------
class _Sampler:
    def __init__(self, env, arch: str, steps: int):
        import torch
        self.env, self.arch, self.steps = env, arch, steps
        g = torch.Generator().manual_seed(1)
        ctx = 2048 if arch == "sdxl" else 768

        def cond():
            opts = {"pooled_output": torch.randn(1, 1280, generator=g)} if arch == "sdxl" else {}
            return [[torch.randn(1, 8, ctx, generator=g), opts]]

        self.positive, self.negative = cond(), cond()

    def __call__(self, model, *, cfg=5.0, steps=None, positive=None, negative=None):
        import torch
        import comfy.utils
        comfy.utils.set_progress_bar_enabled(False)
        latent = {"samples": torch.zeros(1, 4, 8, 8)}
        with torch.inference_mode():
            out = self.env.nodes.common_ksampler(
                model, 0, steps or self.steps, cfg, "euler", "normal", positive or self.positive,
                negative or self.negative, latent, denoise=1.0)
        return out[0]["samples"].detach().float().cpu().clone()


def run_node(env, node_id: str, **inputs):
    """The node's first output, called as ComfyUI's executor calls it (execution.py, inference mode): a V3 node
    through a locked clone of its class (``VALIDATE_CLASS``, ``PREPARE_CLASS_CLONE``, ``make_locked_method_func``),
    a V1 node as ``getattr(instance, FUNCTION)(**inputs)``; the result's ``[0]``."""
    import torch
    cls = env.nodes.NODE_CLASS_MAPPINGS[node_id]
    node = cls()
    try:
        from comfy_api.internal import _ComfyNodeInternal, make_locked_method_func
    except ImportError:  # a ComfyUI without the V3 API
        _ComfyNodeInternal = make_locked_method_func = None
    with torch.inference_mode():
        if _ComfyNodeInternal is not None and isinstance(node, _ComfyNodeInternal):
            cls.VALIDATE_CLASS()
            call = make_locked_method_func(cls, node.FUNCTION, cls.PREPARE_CLASS_CLONE({}))
        else:
            call = getattr(node, node.FUNCTION)
        out = call(**inputs)
    return (out.result if hasattr(out, "result") and hasattr(out, "args") else out)[0]


def apply_ipadapter(env, model, ipadapter_file: str, seed: int = 3):
    import torch
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.randn(1, IPA_CLIP_DIM, generator=g), torch.randn(1, IPA_CLIP_DIM, generator=g)
    with torch.inference_mode():
        loader = env.nodes.NODE_CLASS_MAPPINGS["IPAdapterModelLoader"]()
        ipa = getattr(loader, loader.FUNCTION)(ipadapter_file)[0]
        node = env.nodes.NODE_CLASS_MAPPINGS["IPAdapterEmbeds"]()
        # a negative embedding = an image_negative: the uncond style of style-based CFG (no CLIP vision needed)
        return getattr(node, node.FUNCTION)(model, ipa, pos, 1.0, "style transfer", 0.0, 1.0, neg_embed=neg,
                                            attn_mask=None, clip_vision=None, embeds_scaling="V only")[0]


def _rel_diff(a, b) -> float:
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def _attn2_slots(model) -> dict:
    return model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})


def _recogniser(pack):
    routing = sys.modules.get(pack.__name__ + ".stylestudio_core.routing")
    return getattr(routing, "has_callback_protocol", None)


def _check_protocol(report: Report, pack, model, arch: str) -> bool:
    slots = _attn2_slots(model)
    recognise = _recogniser(pack)
    problems = []
    if not slots:
        problems.append("IPAdapter_plus put no attn2 replace patches on the model")
    kinds = sorted({type(o).__name__ for o in slots.values()})
    for key, obj in slots.items():
        if recognise is not None and not recognise(obj):
            problems.append(f"{type(obj).__name__} at {key} lacks the stacked-callback protocol (callback/kwargs "
                            "lists with sigma_start/sigma_end)")
            break
        if not callable(getattr(obj, "add", None)):
            problems.append(f"{type(obj).__name__} has no .add(): a second IPAdapter node would crash")
            break
        if getattr(obj, "to", None) is None or obj.to("cpu") is not obj:
            problems.append(f"{type(obj).__name__}.to() does not return itself: ComfyUI would swap the patch at load")
            break
    if recognise is None:
        problems.append("the pack has no stylestudio_core.routing.has_callback_protocol to check against")
    if problems:
        report.add(f"patch protocol ({arch}, IPAdapter_plus)", FAIL, "; ".join(problems) + " — update "
                   "ComfyUI_IPAdapter_plus to a release the pack supports (README) or report this IPAdapter_plus "
                   "version")
        return False
    report.add(f"patch protocol ({arch}, IPAdapter_plus)", PASS,
               f"{len(slots)} {'/'.join(kinds)} patches, recognised by the pack")
    return True


def _equal_row(report: Report, check: str, got, expected, what: str,
               meaning: str = "the node changes the model with its effect switched off") -> None:
    import torch
    if got.shape == expected.shape and torch.equal(got, expected):
        report.add(check, PASS, f"bit-identical to {what}")
    else:
        diff = _rel_diff(got, expected) if got.shape == expected.shape else float("nan")
        report.add(check, FAIL, f"differs from {what} (max relative difference {diff:.3g}; shapes "
                                f"{tuple(got.shape)} vs {tuple(expected.shape)}): {meaning}")


def _close_row(report: Report, check: str, got, expected, tol: float, what: str) -> None:
    diff = _rel_diff(got, expected) if got.shape == expected.shape else float("inf")
    if diff <= tol:
        report.add(check, PASS, f"{what} (max relative difference {diff:.2g} ≤ {tol:g})")
    else:
        report.add(check, FAIL, f"NOT {what}: max relative difference {diff:.3g} > {tol:g}")


def _changed_row(report: Report, check: str, got, ref, tol: float, what: str, fix: str) -> bool:
    change = _rel_diff(got, ref)
    if change > 10 * tol:
        report.add(check, PASS, f"{what} (relative change {change:.2g})")
        return True
    report.add(check, FAIL, f"no effect (relative change {change:.2g}): {fix}")
    return False


def _method_facts(report: Report, env, sample, plain, styled, tag: str, tol: float, source: str) -> None:
    """The three method nodes on ``styled`` (a model with a style adapter: ``source``); ``plain`` is the same run
    without any adapter."""
    only = f"the {source}-only run"
    ref = sample(styled)

    # Cross-Modal AdaIN
    _equal_row(report, f"AdaIN off ({tag})",
               sample(run_node(env, ADAIN, model=styled, strength=0.0, start_at=0.0, end_at=1.0)), ref, only)
    _changed_row(report, f"AdaIN on ({tag})",
                 sample(run_node(env, ADAIN, model=styled, strength=1.0, start_at=0.0, end_at=1.0)), ref, tol,
                 "changes the stylised output", f"the pack does not reach the {source}'s attention patches "
                 "(another pack may have replaced them)")

    # Teacher Layout
    _equal_row(report, f"Teacher off ({tag})",
               sample(run_node(env, TEACHER, model=styled, start_at=0.0, end_at=0.0, share_cross_attention=False,
                               return_teacher=False)), ref, only)
    both = sample(run_node(env, TEACHER, model=styled, start_at=0.0, end_at=0.5, share_cross_attention=False,
                           return_teacher=True))
    if both.shape[0] != 2:
        report.add(f"Teacher = plain run ({tag})", FAIL, f"return_teacher gave {both.shape[0]} images, expected 2")
    else:
        _close_row(report, f"Teacher = plain run ({tag})", both[1:], plain, tol,
                   "the teacher equals a plain run without the style adapter")

    # Style Guidance
    _equal_row(report, f"Guidance off ({tag})",
               sample(run_node(env, GUIDANCE, model=styled, style_cfg=9.0, start_at=0.5, end_at=0.5)), ref, only)
    _equal_row(report, f"Guidance = SCFG ({tag})",
               sample(run_node(env, GUIDANCE, model=styled, style_cfg=5.0, start_at=0.0, end_at=1.0), cfg=5.0),
               ref, "plain style-based CFG (style_cfg = cfg)",
               "style_cfg = cfg must be the paper's style-based CFG, with no extra model evaluation")
    # one Euler step to sigma 0 returns the guided x0 prediction itself, so the formula can be checked exactly
    pos, neg = sample.positive, sample.negative
    u = sample(styled, cfg=0.0, steps=1, positive=pos, negative=neg)   # ε(∅t, s⁻)
    m = sample(styled, cfg=0.0, steps=1, positive=pos, negative=pos)   # ε(t, s⁻)
    c = sample(styled, cfg=1.0, steps=1, positive=pos, negative=neg)   # ε(t, s⁺)
    cfg, style_cfg = 5.0, 9.0
    got = sample(run_node(env, GUIDANCE, model=styled, style_cfg=style_cfg, start_at=0.0, end_at=1.0), cfg=cfg,
                 steps=1)
    _close_row(report, f"Guidance formula ({tag})", got, u + cfg * (m - u) + style_cfg * (c - m), tol,
               "ε(∅t,s⁻) + cfg·(ε(t,s⁻) − ε(∅t,s⁻)) + style_cfg·(ε(t,s⁺) − ε(t,s⁻))")


def _check_ipadapter_path(report: Report, env, arch: str, ipadapter_file: str, steps: int, tol: float,
                          pack) -> None:
    base = tiny_model(arch)
    sample = _Sampler(env, arch, steps)
    plain = sample(base)  # before any node touched the model: a node that mutates its input shows as a FAIL
    with_ip = apply_ipadapter(env, base, ipadapter_file)
    if not _check_protocol(report, pack, with_ip, arch):
        return
    _method_facts(report, env, sample, plain, with_ip, f"{arch}, IPAdapter_plus", tol, "IPAdapter_plus")


def _combo_options(env, node_id: str, name: str) -> list:
    """A combo input's choices as the editor gets them (V1 ``[list, {...}]`` or V3 ``("COMBO", {"options"})``)."""
    spec = env.nodes.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"][name]
    return list(spec[0]) if isinstance(spec[0], (list, tuple)) else list(spec[1].get("options", []))


def _random_image(seed: int):
    import torch
    return torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(seed))


def _check_native_path(report: Report, env, arch: str, adapter_file: str, clip_vision, steps: int, tol: float,
                       pack) -> None:
    """The native adapter nodes on one layout: load, apply, weight 0 = the input model, then the method facts
    (with an image_negative: its tokens are the unconditional style of style-based CFG)."""
    tag, fmt = f"{arch}, native", NATIVE_FORMAT[arch]
    listed = adapter_file in _combo_options(env, LOADER, "adapter_name")
    adapter = run_node(env, LOADER, adapter_name=adapter_file)
    spec = getattr(adapter, "spec", None)
    seen = getattr(spec, "format", None)
    if seen != fmt:
        report.add(f"adapter loader ({tag})", FAIL, f"a random {NATIVE_LABEL[fmt]} file in the published layout was "
                                                    f"detected as {seen!r}: the loader's format detection is broken")
        return
    report.add(f"adapter loader ({tag})", PASS if listed else FAIL,
               f"{spec.label}" + ("" if listed else ": but the file is not in the loader's adapter_name list "
                                                    "(models/ipadapter is not registered with ComfyUI)"))

    base = tiny_model(arch)
    sample = _Sampler(env, arch, steps)
    plain = sample(base)  # before any node touched the model: a node that mutates its input shows as a FAIL
    image, negative = _random_image(7), _random_image(8)

    def apply(weight: float, start_at: float = 0.0, end_at: float = 1.0):
        return run_node(env, APPLY, model=base, style_adapter=adapter, clip_vision=clip_vision, image=image,
                        weight=weight, blocks="up", start_at=start_at, end_at=end_at, image_negative=negative,
                        attn_mask=None)

    styled = apply(1.0)
    slots = _attn2_slots(styled)
    recognise = _recogniser(pack)
    odd = [type(o).__name__ for o in slots.values() if recognise is None or not recognise(o)]
    if not slots or odd:
        report.add(f"patch protocol ({tag})", FAIL,
                   ("no attn2 patches on the model" if not slots else f"{odd[0]} patches without the stacked-callback "
                    "protocol") + ": the native adapter does not reach attention through the pack's routing")
        return
    kinds = "/".join(sorted({type(o).__name__ for o in slots.values()}))
    report.add(f"patch protocol ({tag})", PASS, f"{len(slots)} {kinds} patches, recognised by the pack")
    _equal_row(report, f"Style adapter off ({tag})", sample(apply(0.0)), plain, "the input model's run",
               "weight 0 must return the model unchanged")
    _equal_row(report, f"Style adapter empty window ({tag})", sample(apply(1.0, 0.5, 0.5)), plain,
               "the input model's run", "start_at = end_at must return the model unchanged")
    if not _changed_row(report, f"Style adapter on ({tag})", sample(styled), plain, tol, "changes the output",
                        "weight 1 adds no style: the adapter's attention is not called"):
        return
    _method_facts(report, env, sample, plain, styled, tag, tol, "native adapter")


# --- entry point ----------------------------------------------------------------------------------------------
def run(args) -> int:
    from .comfy_env import ComfyUINotFound, load_comfyui
    t0 = time.perf_counter()
    try:
        env = load_comfyui(args.comfyui, extra_custom_nodes=args.extra_custom_nodes, cpu=args.cpu,
                           comfy_args=args.comfy_args, custom_nodes=not args.no_custom_nodes,
                           verbose=args.verbose)
    except ComfyUINotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = Report()
    tmp = tempfile.mkdtemp(prefix="stylestudio_doctor_")
    try:
        pack = _check_pack(report, env)
        _device(report)
        _frontend(report, env.root)
        has_ipa = _check_ipadapter(report, env, required=args.require_ipadapter_plus)
        if pack is None:
            report.add("method checks", SKIP, "need the StyleStudio nodes (see above)")
        else:
            import comfy.model_management as mm
            folder = os.path.join(tmp, "models", "ipadapter")
            os.makedirs(folder)
            archs = ARCHS if args.arch == "all" else (args.arch,)
            # tolerance for "equal up to kernel numerics" (the teacher runs in a doubled batch)
            tol = 2e-5 if mm.get_torch_device().type == "cpu" else 2e-3

            def guarded(check: str, fn, *a) -> None:
                try:
                    fn(*a)
                except Exception as e:  # noqa: BLE001 - a crash is a failed check with its reason
                    where = traceback.format_exc() if args.verbose else \
                        traceback.format_exception_only(type(e), e)[-1].strip()
                    report.add(check, FAIL, f"crashed: {where}")

            # the native path always runs: it is what the exit status rests on without IPAdapter_plus
            files = {arch: f"stylestudio-doctor-random-{NATIVE_FORMAT[arch]}_{arch}.safetensors" for arch in archs}
            clip = []

            def native_setup():
                for arch in archs:
                    write_random_native_adapter(os.path.join(folder, files[arch]), NATIVE_FORMAT[arch], arch)
                register_adapter_folder(env, folder)
                clip.append(tiny_clip_vision(tmp))

            guarded("native set-up (adapter files, CLIP vision)", native_setup)
            for arch in archs if clip else ():
                guarded(f"method checks ({arch}, native)", _check_native_path, report, env, arch, files[arch],
                        clip[0], args.steps, tol, pack)
            if not has_ipa:
                ipa_row = next(r for r in report.rows if r.check == "IPAdapter_plus")
                if ipa_row.status == FAIL:
                    report.add("method checks (IPAdapter_plus)", SKIP, "IPAdapter_plus did not load (see above)")
                else:
                    report.add("method checks (IPAdapter_plus)", INFO,
                               "not installed: the native adapter nodes are used (their checks are above)")
            else:
                for arch in archs:
                    fname = f"stylestudio-doctor-random-ip-adapter_{arch}.safetensors"

                    def ipadapter_path(arch=arch, fname=fname):
                        write_random_ipadapter(os.path.join(folder, fname), arch)
                        _check_ipadapter_path(report, env, arch, fname, args.steps, tol, pack)

                    guarded(f"method checks ({arch}, IPAdapter_plus)", ipadapter_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"StyleStudio doctor — ComfyUI at {env.root} ({time.perf_counter() - t0:.0f} s)")
    print(report.format())
    failures = report.failures
    if failures:
        print(f"doctor: {len(failures)} of {len(report.rows)} checks FAILED: " + ", ".join(r.check for r in failures))
        return 1
    print(f"doctor: all {len(report.rows)} checks passed")
    return 0
