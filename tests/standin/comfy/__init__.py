"""Unit-tier stand-in of ComfyUI's top-level ``comfy`` package (mirrors ComfyUI v0.3.64).

Only the surfaces the StyleStudio pack touches exist here, each module written from scratch to behave like
the real file it names (see tests/hosts/standin_host.py and /work/shared/docs/host.md). Put ``tests/standin``
on ``sys.path`` to use it; never import it next to a real ComfyUI in the same process.
"""
