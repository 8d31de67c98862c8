"""The pack's nodes: one V3 class (``io.ComfyNode``) per file.

``NODES`` is the registry: the pack's ``comfy_entrypoint()`` (../__init__.py) returns a ``StyleStudioExtension``
that hands exactly this list to ComfyUI, and tests and tools read the two mappings derived from it. To add a
node: write its class in its own file and append it here; tests/test_pack_conventions.py then checks it like the
others.
"""
from comfy_api.latest import ComfyExtension, io

from .adapter_roles import StyleStudioAdapterRoles
from .apply_style_adapter import StyleStudioApplyStyleAdapter
from .cross_modal_adain import StyleStudioCrossModalAdaIN
from .style_guidance import StyleStudioStyleGuidance
from .style_adapter_loader import StyleStudioStyleAdapterLoader
from .teacher_layout import StyleStudioTeacherLayout

NODES = [
    StyleStudioCrossModalAdaIN,
    StyleStudioTeacherLayout,
    StyleStudioStyleGuidance,
    StyleStudioStyleAdapterLoader,
    StyleStudioApplyStyleAdapter,
    StyleStudioAdapterRoles,
]

# {node id: class} / {node id: display name}, as ComfyUI registers them from the schemas. Deliberately NOT
# re-exported by the pack's __init__.py: ComfyUI v0.3.64's loader takes a module's NODE_CLASS_MAPPINGS in
# preference to its comfy_entrypoint, which would then never run.
NODE_CLASS_MAPPINGS = {cls.GET_SCHEMA().node_id: cls for cls in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.GET_SCHEMA().node_id: cls.GET_SCHEMA().display_name for cls in NODES}


class StyleStudioExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
