from comfy_api.latest import io

from .patching import CATEGORY, check_range, check_unet, check_window, patched, schedule_window

FEATURE = "guidance"


class StyleStudioStyleGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # Input ids, order, types and widget defaults/ranges are what saved workflows store: never change them
        # (tests/test_v3_schema.py freezes them).
        return io.Schema(
            node_id="StyleStudioStyleGuidance",
            display_name="StyleStudio Style Guidance",
            category=CATEGORY,
            description=(
                "StyleStudio style-based guidance: the KSampler's cfg then steers the text, and style_cfg steers "
                "the style direction separately: ε = ε(neg text, s⁻) + cfg·(ε(text, s⁻) − ε(neg text, s⁻)) + "
                "style_cfg·(ε(text, s⁺) − ε(text, s⁻)), where s⁻ is the IP-Adapter's negative style (its "
                "image_negative input: the reference's layout without the wanted style). style_cfg = cfg is the "
                "paper's style-based CFG at no extra cost; any other value adds one model evaluation per step."),
            inputs=[
                io.Model.Input("model", tooltip=(
                    "The model to patch; it must carry an IP-Adapter (before or after this node). Give the "
                    "IPAdapter node an image_negative for the paper's SCFG.")),
                io.Float.Input("style_cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "Guidance scale of the style direction. Equal to the KSampler's cfg: plain style-based CFG (no "
                    "extra cost). 0 removes the style direction; higher pushes away from the negative style.")),
                io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the schedule where the separate style scale starts.")),
                io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the schedule where it stops; outside the window style follows cfg.")),
            ],
            outputs=[io.Model.Output(tooltip=(
                "The model with separate text (KSampler cfg) and style (style_cfg) guidance."))],
        )

    @classmethod
    def execute(cls, model, style_cfg, start_at, end_at) -> io.NodeOutput:
        check_range(FEATURE, "style_cfg", style_cfg, 0.0, 100.0)
        check_window(FEATURE, start_at, end_at)
        check_unet(model, FEATURE)
        if end_at <= start_at:
            return io.NodeOutput(patched(model, FEATURE, None))
        return io.NodeOutput(patched(model, FEATURE, {"style_cfg": float(style_cfg),
                                                      **schedule_window(start_at, end_at)}))
