from .patching import CATEGORY, check_range, check_unet, check_window, patched, sigma_window

FEATURE = "adain"


class StyleStudioCrossModalAdaIN:
    DESCRIPTION = (
        "StyleStudio cross-modal AdaIN: in every cross-attention layer where an IP-Adapter adds style, the text "
        "output is re-normalised to the style output's per-channel statistics instead of having the style "
        "added on top. The prompt keeps control of content and colour (a 'red apple' stays red) while the "
        "style image sets the texture. Place it anywhere on the MODEL path with an IPAdapter node, before or "
        "after it.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with cross-modal AdaIN in its IP-Adapter layers.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model to patch. It (or a later node) must carry an IP-Adapter."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                         "1 = the paper's AdaIN (text output takes the style statistics), 0 = plain IP-Adapter "
                         "sum, in between a linear blend of the two."}),
            "start_at": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                         "Fraction of the schedule where AdaIN starts (0 = first step)."}),
            "end_at": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                       "Fraction of the schedule where AdaIN stops (1 = last step). Outside the window the "
                       "IP-Adapter output is added as usual."}),
        }}

    def patch(self, model, strength, start_at, end_at):
        check_range(FEATURE, "strength", strength, 0.0, 1.0)
        check_window(FEATURE, start_at, end_at)
        check_unet(model, FEATURE)
        if strength == 0 or end_at <= start_at:
            return (patched(model, FEATURE, None),)
        return (patched(model, FEATURE, {"strength": float(strength), **sigma_window(model, start_at, end_at)}),)
