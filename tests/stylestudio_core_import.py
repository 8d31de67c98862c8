"""Import stylestudio_core by path without importing the pack's top level (which needs a ComfyUI host)."""
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
core = importlib.import_module("stylestudio_core")
for _m in ("adain", "guidance", "layout", "routing", "mechanism"):
    importlib.import_module(f"stylestudio_core.{_m}")
