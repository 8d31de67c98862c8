"""Stand-in of ``comfy_api.latest``: ``io`` (V3 schema, nodes, outputs) and ``ComfyExtension``."""
from __future__ import annotations

from abc import ABC, abstractmethod

from . import _io as io  # noqa: F401  (the real package also exposes the module as ``io``)


class ComfyExtension(ABC):
    """What a pack's ``comfy_entrypoint()`` returns: ComfyUI awaits ``get_node_list()`` and registers every class
    under its schema's ``node_id`` (nodes.py ``load_custom_node``)."""

    async def on_load(self) -> None:
        """Called once when the extension is loaded."""

    @abstractmethod
    async def get_node_list(self) -> list:
        """The ``io.ComfyNode`` classes this extension provides."""


__all__ = ["io", "ComfyExtension"]
