from .cross_modal_adain import StyleStudioCrossModalAdaIN
from .style_guidance import StyleStudioStyleGuidance
from .teacher_layout import StyleStudioTeacherLayout

NODE_CLASS_MAPPINGS = {
    "StyleStudioCrossModalAdaIN": StyleStudioCrossModalAdaIN,
    "StyleStudioTeacherLayout": StyleStudioTeacherLayout,
    "StyleStudioStyleGuidance": StyleStudioStyleGuidance,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "StyleStudioCrossModalAdaIN": "StyleStudio Cross-Modal AdaIN",
    "StyleStudioTeacherLayout": "StyleStudio Teacher Layout",
    "StyleStudioStyleGuidance": "StyleStudio Style Guidance",
}
