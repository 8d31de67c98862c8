from .patching import CATEGORY, check_unet, check_window, patched, sigma_window

FEATURE = "teacher"


class StyleStudioTeacherLayout:
    DESCRIPTION = (
        "StyleStudio teacher layout: samples an un-stylised 'teacher' (the same model without the IP-Adapter) "
        "beside your image, from the same noise, and during the early steps lets the stylised image use the "
        "teacher's self-attention maps. The layout then follows the prompt instead of the style image. Costs "
        "about 2x per step inside the window and nothing after it. Works with any sampler: ancestral/SDE "
        "samplers give the teacher the same per-step noise as your image.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model whose samples borrow the teacher's layout.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model to patch (with an IPAdapter node before or after this one)."}),
            "start_at": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                         "Fraction of the schedule where the teacher starts lending its self-attention."}),
            "end_at": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                       "Fraction of the schedule where it stops (paper: 20 of 50 steps = 0.4; 0.2-0.33 keeps "
                       "more style, larger values keep more layout). After it the teacher is not computed."}),
            "share_cross_attention": ("BOOLEAN", {"default": False, "tooltip":
                                      "Also share the teacher's text cross-attention maps (the paper's optional "
                                      "variant; it reports no extra layout stability)."}),
            "return_teacher": ("BOOLEAN", {"default": False, "tooltip":
                               "Return [your images..., teacher images...] so you can see the un-stylised "
                               "layout. The teacher then runs to the last step (slower)."}),
        }}

    def patch(self, model, start_at, end_at, share_cross_attention, return_teacher):
        check_window(FEATURE, start_at, end_at)
        check_unet(model, FEATURE)
        if end_at <= start_at and not return_teacher:
            return (patched(model, FEATURE, None),)
        return (patched(model, FEATURE, {"share_cross_attention": bool(share_cross_attention),
                                         "return_teacher": bool(return_teacher),
                                         **(sigma_window(model, start_at, end_at) if end_at > start_at
                                            else {"sigma_start": -1.0, "sigma_end": -1.0})}),)
