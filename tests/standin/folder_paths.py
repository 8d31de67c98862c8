"""Stand-in of ComfyUI's top-level folder_paths module: named model folders (a temp dir per process).

Kept from the real module: ``folder_names_and_paths[name] = ([paths], {extensions})``, ``models_dir``,
``supported_pt_extensions``, ``add_model_folder_path``, ``get_folder_paths``, ``get_filename_list`` (files under
each path with a listed extension, sorted, relative names), ``get_full_path`` (None when missing) and
``get_full_path_or_raise``. Simplified: no caching, no output/input/temp directories, no legacy name mapping.
"""
from __future__ import annotations

import os
import tempfile

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
base_path = tempfile.mkdtemp(prefix="stylestudio_standin_models_")
models_dir = os.path.join(base_path, "models")
folder_names_and_paths: dict = {
    "checkpoints": ([os.path.join(models_dir, "checkpoints")], supported_pt_extensions),
    "clip_vision": ([os.path.join(models_dir, "clip_vision")], supported_pt_extensions),
}


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    paths, exts = folder_names_and_paths.get(folder_name, ([], set(supported_pt_extensions)))
    if full_folder_path not in paths:
        paths = [full_folder_path] + paths if is_default else paths + [full_folder_path]
    folder_names_and_paths[folder_name] = (paths, exts)


def get_folder_paths(folder_name):
    return list(folder_names_and_paths[folder_name][0])


def get_filename_list(folder_name):
    paths, exts = folder_names_and_paths[folder_name]
    out = set()
    for root in paths:
        if not os.path.isdir(root):
            continue
        for dirpath, _, files in os.walk(root, followlinks=True):
            for f in files:
                if not exts or os.path.splitext(f)[1].lower() in exts:
                    out.add(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


def get_full_path(folder_name, filename):
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for root in folder_names_and_paths[folder_name][0]:
        path = os.path.join(root, filename)
        if os.path.isfile(path):
            return path
    return None


def get_full_path_or_raise(folder_name, filename):
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path
