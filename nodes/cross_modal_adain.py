from comfy_api.latest import io

from .patching import CATEGORY, check_range, check_unet, check_window, patched, schedule_window

FEATURE = "adain"


class StyleStudioCrossModalAdaIN(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # Input ids, order, types and widget defaults/ranges are what saved workflows store: never change them
        # (tests/test_v3_schema.py freezes them).
        return io.Schema(
            node_id="StyleStudioCrossModalAdaIN",
            display_name="StyleStudio Cross-Modal AdaIN",
            category=CATEGORY,
            description=(
                "StyleStudio cross-modal AdaIN: in every cross-attention layer where an IP-Adapter adds style, the "
                "text output is re-normalised to the style output's per-channel statistics instead of having the "
                "style added on top. The prompt keeps control of content and colour (a 'red apple' stays red) "
                "while the style image sets the texture. Place it anywhere on the MODEL path with an IPAdapter "
                "node, before or after it."),
            inputs=[
                io.Model.Input("model", tooltip="The model to patch. It (or a later node) must carry an IP-Adapter."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=(
                    "1 = the paper's AdaIN (text output takes the style statistics), 0 = plain IP-Adapter sum, "
                    "in between a linear blend of the two.")),
                io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the schedule where AdaIN starts (0 = first step).")),
                io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the schedule where AdaIN stops (1 = last step). Outside the window the "
                    "IP-Adapter output is added as usual.")),
            ],
            outputs=[io.Model.Output(tooltip="The model with cross-modal AdaIN in its IP-Adapter layers.")],
        )

    @classmethod
    def execute(cls, model, strength, start_at, end_at) -> io.NodeOutput:
        check_range(FEATURE, "strength", strength, 0.0, 1.0)
        check_window(FEATURE, start_at, end_at)
        check_unet(model, FEATURE)
        if strength == 0 or end_at <= start_at:
            return io.NodeOutput(patched(model, FEATURE, None))
        return io.NodeOutput(patched(model, FEATURE, {"strength": float(strength),
                                                      **schedule_window(start_at, end_at)}))
