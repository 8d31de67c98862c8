"""Checks of an API-format prompt against the live ComfyUI: values, model files, and ComfyUI's own validation."""
from __future__ import annotations

import inspect
import math
import os
import re
import sys
import uuid
from typing import Callable, Mapping

from .convert import NodeDef, Problem, _classify, pack_hint

#: input name -> model folder, for combos whose folder cannot be told from the list itself (e.g. empty lists)
MODEL_INPUTS = {
    "ckpt_name": "checkpoints", "control_net_name": "controlnet", "ipadapter_file": "ipadapter",
    "vae_name": "vae", "lora_name": "loras", "unet_name": "diffusion_models", "style_model_name": "style_models",
    "gligen_name": "gligen", "hypernetwork_name": "hypernetworks", "model_name": "upscale_models",
    "clip_name": "text_encoders",
}
#: node class -> model folder where the input name is ambiguous
MODEL_INPUTS_BY_CLASS = {("CLIPVisionLoader", "clip_name"): "clip_vision"}
SKIP_FOLDERS = {"custom_nodes", "configs"}


def node_label(prompt: dict, nid: str, labels: Mapping[str, str] | None = None) -> str:
    if labels and nid in labels:
        return labels[nid]
    node = prompt.get(nid) or {}
    ctype = node.get("class_type", "?")
    title = (node.get("_meta") or {}).get("title")
    label = f"#{nid} {ctype}"
    if title and title != ctype:
        label += f' "{title}"'
    return label


class ModelFolders:
    """Tells which model folder a combo list comes from, and where that folder is searched."""

    def __init__(self, folder_paths):
        self.fp = folder_paths
        self._lists: dict[str, frozenset] | None = None

    def lists(self) -> dict[str, frozenset]:
        if self._lists is None:
            out = {}
            for name in list(getattr(self.fp, "folder_names_and_paths", {})):
                if name in SKIP_FOLDERS:
                    continue
                try:
                    out[name] = frozenset(self.fp.get_filename_list(name))
                except Exception:
                    continue
            self._lists = out
        return self._lists

    def folder_for(self, class_type: str, input_name: str, options: list) -> str | None:
        by_name = MODEL_INPUTS_BY_CLASS.get((class_type, input_name)) or MODEL_INPUTS.get(input_name)
        opts = frozenset(o for o in options if isinstance(o, str))
        if not opts:  # an empty list: most likely a model folder without files
            return by_name
        lists = self.lists()
        matches = [f for f, files in lists.items() if files == opts]
        if len(matches) == 1:
            return matches[0]
        if by_name and (by_name in matches or opts <= lists.get(by_name, frozenset())):
            return by_name
        return None

    def paths(self, folder: str) -> list[str]:
        try:
            return list(self.fp.get_folder_paths(folder))
        except Exception:
            return []


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[1], int)


def check_values(prompt: dict, defs: Mapping[str, NodeDef], folder_paths=None, *,
                 labels: Mapping[str, str] | None = None, dropped: Mapping | None = None,
                 skip: set | None = None) -> list[Problem]:
    """Every problem ComfyUI would refuse the prompt for, in readable form: unknown node types, links to missing
    nodes/slots, missing required inputs, numbers out of range, combo values not in the live list (missing model
    files and input images named as such)."""
    problems: list[Problem] = []
    folders = ModelFolders(folder_paths) if folder_paths is not None else None
    dropped = dropped or {}
    skip = skip or set()
    for nid, node in prompt.items():
        if nid in skip:
            continue
        label = node_label(prompt, nid, labels)
        ctype = node.get("class_type")
        if ctype not in defs:
            where = pack_hint(ctype or "")
            problems.append(Problem("error", "unknown_node", f"unknown node type '{ctype}'" +
                                    (f": it comes from {where}" if where else
                                     ": is the custom node pack that provides it installed?"), nid, label))
            continue
        d = defs[ctype]
        inputs = node.get("inputs") or {}
        for cat in ("required", "optional"):
            for name, spec in (d.inputs.get(cat) or {}).items():
                if name not in inputs:
                    if cat == "required":
                        why = dropped.get((nid, name))
                        problems.append(Problem("error", "missing_input",
                                                f"required input '{name}' is not connected"
                                                + (f" ({why})" if why else ""), nid, label, name))
                    continue
                value = inputs[name]
                if _is_link(value):
                    src = prompt.get(str(value[0]))
                    if src is None:
                        if str(value[0]) not in skip:
                            problems.append(Problem("error", "broken_link", f"input '{name}' is linked to node "
                                                    f"{value[0]}, which is not in the prompt", nid, label, name))
                        continue
                    sdef = defs.get(src.get("class_type")) if src.get("class_type") in defs else None
                    if sdef is not None and not 0 <= value[1] < len(sdef.outputs):
                        problems.append(Problem("error", "broken_link", f"input '{name}' is linked to output slot "
                                                f"{value[1]} of {node_label(prompt, str(value[0]), labels)}, which "
                                                f"has {len(sdef.outputs)} outputs", nid, label, name))
                    continue
                if isinstance(value, dict) and "__value__" in value:
                    value = value["__value__"]
                kind, opts = _classify(spec)
                problems += _check_value(ctype, name, kind, opts, value, nid, label, folders)
    return problems


def _check_value(ctype, name, kind, opts, value, nid, label, folders) -> list[Problem]:
    out = []
    if kind in ("INT", "FLOAT"):
        try:
            num = float(value)
        except (TypeError, ValueError):
            return [Problem("error", "bad_value", f"'{name}' = {value!r} is not a number", nid, label, name)]
        if not math.isfinite(num):
            return [Problem("error", "bad_value", f"'{name}' = {value!r} is not finite", nid, label, name)]
        if kind == "INT" and not float(num).is_integer():
            out.append(Problem("error", "bad_value", f"'{name}' = {value!r} is not a whole number", nid, label, name))
        if "min" in opts and num < opts["min"]:
            out.append(Problem("error", "out_of_range", f"'{name}' = {value!r} is below the minimum {opts['min']}",
                               nid, label, name))
        if "max" in opts and num > opts["max"]:
            out.append(Problem("error", "out_of_range", f"'{name}' = {value!r} is above the maximum {opts['max']}",
                               nid, label, name))
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            out.append(Problem("warning", "bad_value", f"'{name}' = {value!r} is not true/false", nid, label, name))
    elif kind == "COMBO":
        options = opts.get("options") or []
        if opts.get("multi_select") or opts.get("multiselect") or opts.get("remote"):
            return out
        if not options and opts.get("_v3_combo"):
            return out  # a V3 combo whose options are not in its definition: nothing to check against
        if value not in options:
            upload = any(opts.get(k) for k in ("image_upload", "video_upload", "audio_upload",
                                               "animated_image_upload"))
            folder = None if upload or folders is None else folders.folder_for(ctype, name, options)
            if upload:
                out.append(Problem("error", "missing_file", f"input file '{value}' ({name}) is not in ComfyUI's input "
                                   "folder: put it there (or pass --input-dir / --set)", nid, label, name))
            elif folder is not None:
                where = ", ".join(folders.paths(folder)) or f"models/{folder}"
                out.append(Problem("error", "missing_model", f"model file '{value}' ({name}) not found: put it in "
                                   f"the '{folder}' model folder ({where})", nid, label, name))
            else:
                shown = options if len(options) <= 20 else options[:20] + ["..."]
                out.append(Problem("error", "bad_value", f"'{name}' = {value!r} is not one of {shown}",
                                   nid, label, name))
    return out


# ----------------------------------------------------------------------------------------------------------
# IPAdapter_plus's unified loaders pick their files by pattern from a preset: check those files exist
# ----------------------------------------------------------------------------------------------------------
def _upstream_ckpt(prompt: dict, nid: str, depth: int = 0) -> str | None:
    """The ckpt_name of the checkpoint loader feeding a node's `model` input (following MODEL links)."""
    if depth > 50:
        return None
    node = prompt.get(nid) or {}
    inputs = node.get("inputs") or {}
    if isinstance(inputs.get("ckpt_name"), str):
        return inputs["ckpt_name"]
    src = inputs.get("model")
    if _is_link(src):
        return _upstream_ckpt(prompt, str(src[0]), depth + 1)
    return None


def check_ipadapter_presets(prompt: dict, nodes_module, *, labels=None, skip=None) -> list[Problem]:
    problems = []
    cls = nodes_module.NODE_CLASS_MAPPINGS.get("IPAdapterUnifiedLoader")
    if cls is None:
        return problems
    module = sys.modules.get(cls.__module__)
    get_cv = getattr(module, "get_clipvision_file", None)
    get_ipa = getattr(module, "get_ipadapter_file", None)
    if get_cv is None or get_ipa is None:
        return problems
    skip = skip or set()
    for nid, node in prompt.items():
        if nid in skip or not str(node.get("class_type", "")).startswith("IPAdapterUnifiedLoader"):
            continue
        preset = (node.get("inputs") or {}).get("preset")
        if not isinstance(preset, str):
            continue
        label = node_label(prompt, nid, labels)
        if node.get("class_type") == "IPAdapterUnifiedLoader":
            try:
                if get_cv(preset) is None:
                    problems.append(Problem("error", "missing_model",
                                            f"preset '{preset}' needs a CLIP vision model in the 'clip_vision' folder "
                                            "(e.g. CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors; see "
                                            "ComfyUI_IPAdapter_plus's README)", nid, label, "preset"))
            except Exception:
                pass
        ckpt = _upstream_ckpt(prompt, nid)
        archs = [True, False] if ckpt is None else [bool(re.search("xl", ckpt, re.IGNORECASE))]
        found, message = False, None
        for is_sdxl in archs:
            try:
                res = get_ipa(preset, is_sdxl)
                if res and res[0]:
                    found = True
            except Exception as e:  # e.g. "light model is not supported for SDXL"
                message = str(e)
        if not found:
            arch = "" if ckpt is None else (" for SDXL" if archs[0] else " for SD1.5")
            problems.append(Problem("error", "missing_model",
                                    message or f"preset '{preset}' finds no IP-Adapter model{arch} in the 'ipadapter' "
                                    "folder (file names as in ComfyUI_IPAdapter_plus's README, e.g. "
                                    "ip-adapter-plus_sdxl_vit-h.safetensors / ip-adapter-plus_sd15.safetensors)",
                                    nid, label, "preset"))
    return problems


# ----------------------------------------------------------------------------------------------------------
# ComfyUI's own validation
# ----------------------------------------------------------------------------------------------------------
def comfy_validate(execution_module, prompt: dict, run: Callable) -> tuple:
    """``execution.validate_prompt`` across ComfyUI versions: (ok, error, good_outputs, node_errors)."""
    fn = execution_module.validate_prompt
    params = list(inspect.signature(fn).parameters)
    if len(params) >= 3:
        res = fn(str(uuid.uuid4()), prompt, None)
    elif len(params) == 2:
        res = fn(str(uuid.uuid4()), prompt)
    else:
        res = fn(prompt)
    if inspect.isawaitable(res):
        res = run(res)
    return tuple(res)


def readable_validation(result: tuple, prompt: dict, *, labels=None, already: set | None = None,
                        dropped: Mapping | None = None) -> list[Problem]:
    """ComfyUI's validation result as Problems (skipping (node, input) pairs reported already)."""
    ok, error, _good, node_errors = (tuple(result) + (None, None, [], {}))[:4]
    problems = []
    already = already or set()
    dropped = dropped or {}
    for nid, info in (node_errors or {}).items():
        nid = str(nid)
        label = node_label(prompt, nid, labels)
        for err in info.get("errors") or []:
            extra = err.get("extra_info") or {}
            name = extra.get("input_name")
            if (nid, name) in already or (nid, None) in already:
                continue
            msg = f"{err.get('message')}: {err.get('details')}".rstrip(": ")
            if err.get("type") == "required_input_missing" and (nid, name) in dropped:
                msg += f" ({dropped[(nid, name)]})"
            if err.get("type") in ("exception_during_inner_validation", "exception_during_validation"):
                msg = f"{err.get('message')}: {extra.get('exception_message') or err.get('details')}"
            problems.append(Problem("error", "comfyui", msg, nid, label, name))
    if not ok and not problems and not node_errors and error:
        details = error.get("details") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else str(error)
        problems.append(Problem("error", "comfyui", f"{message}" + (f": {details}" if details else "")))
    return problems


def pack_failure_hint(problems: list, env) -> list[Problem]:
    """'This pack/file failed to import' notes, when some unknown node type is not from a known pack."""
    out = []
    if not any(p.kind == "unknown_node" and "it comes from" not in p.message for p in problems):
        return out  # every unknown node is attributed to a known pack already
    for f in getattr(env, "import_failed", []) or []:
        out.append(Problem("warning", "import_failed", f"ComfyUI could not import its built-in node file {f} "
                           "(a missing Python package?); its nodes are unknown"))
    for f in getattr(env, "pack_failures", []) or []:
        out.append(Problem("warning", "import_failed", f"custom node pack {os.path.basename(f.rstrip('/'))} failed "
                           f"to import ({f}); run with -v to see why"))
    return out
