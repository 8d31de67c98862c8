"""Unit-tier stand-in of ComfyUI's ``comfy_api`` package (mirrors ComfyUI v0.3.64): only ``comfy_api.latest`` with
the V3 node-schema surfaces the pack uses (``io`` and ``ComfyExtension``), written from scratch to behave like
the real ``comfy_api/latest/_io.py``. tests/test_v3_schema.py compares what it produces for the pack's nodes with
what the real ComfyUI produces (host tier)."""
