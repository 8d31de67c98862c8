"""ComfyUI-StyleStudio: StyleStudio (CVPR 2025) style-transfer controls as ComfyUI nodes.

Registration is V3: ComfyUI calls ``comfy_entrypoint()`` and registers every class of ``nodes.NODES`` under its
schema's node_id. There is intentionally no module-level NODE_CLASS_MAPPINGS here: ComfyUI's loader
(nodes.py ``load_custom_node``, v0.3.64) uses NODE_CLASS_MAPPINGS when a module has it and then never calls
``comfy_entrypoint``. The nodes are imported inside the entrypoint, so this file imports without ComfyUI
(pytest imports it as a package before any host exists; tools may read WEB_DIRECTORY).

``WEB_DIRECTORY`` serves web/ at /extensions/<this folder>/: the editor's node-help panel reads
web/docs/<node id>.md (and web/docs/<node id>/<locale>.md); translations live in locales/<lang>/.
"""
import logging

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    try:
        from .nodes import StyleStudioExtension
    except Exception:
        # ComfyUI logs only the message of an entrypoint error; the traceback is what a bug report needs
        logging.getLogger("StyleStudio").exception("ComfyUI-StyleStudio: its nodes failed to import")
        raise
    return StyleStudioExtension()


__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
