"""Headless validator and runner for ComfyUI workflow files (``python -m stylestudio_cli`` / ``stylestudio``).

Not part of the node pack ComfyUI loads: importing this package imports no ComfyUI module. ComfyUI is loaded
in-process only by ``stylestudio_cli.comfy_env.load_comfyui`` (the ``validate`` / ``run`` commands); the UI->API
conversion (``stylestudio_cli.convert``) is pure Python and takes the node definitions as an argument.
"""
from .convert import NodeDef, Problem, check_links, is_api_format, load_workflow, ui_to_api

__all__ = ["NodeDef", "Problem", "check_links", "is_api_format", "load_workflow", "ui_to_api"]
