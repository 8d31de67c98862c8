from .apply_style_adapter import StyleStudioApplyStyleAdapter
from .cross_modal_adain import StyleStudioCrossModalAdaIN
from .style_guidance import StyleStudioStyleGuidance
from .style_adapter_loader import StyleStudioStyleAdapterLoader
from .teacher_layout import StyleStudioTeacherLayout

NODE_CLASS_MAPPINGS = {
    "StyleStudioCrossModalAdaIN": StyleStudioCrossModalAdaIN,
    "StyleStudioTeacherLayout": StyleStudioTeacherLayout,
    "StyleStudioStyleGuidance": StyleStudioStyleGuidance,
    "StyleStudioStyleAdapterLoader": StyleStudioStyleAdapterLoader,
    "StyleStudioApplyStyleAdapter": StyleStudioApplyStyleAdapter,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "StyleStudioCrossModalAdaIN": "StyleStudio Cross-Modal AdaIN",
    "StyleStudioTeacherLayout": "StyleStudio Teacher Layout",
    "StyleStudioStyleGuidance": "StyleStudio Style Guidance",
    "StyleStudioStyleAdapterLoader": "StyleStudio Style Adapter Loader",
    "StyleStudioApplyStyleAdapter": "StyleStudio Apply Style Adapter",
}
