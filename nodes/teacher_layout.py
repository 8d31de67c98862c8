from comfy_api.latest import io

from .patching import CATEGORY, check_unet, check_window, patched, schedule_window

FEATURE = "teacher"


class StyleStudioTeacherLayout(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # Input ids, order, types and widget defaults/ranges are what saved workflows store: never change them
        # (tests/test_v3_schema.py freezes them).
        return io.Schema(
            node_id="StyleStudioTeacherLayout",
            display_name="StyleStudio Teacher Layout",
            category=CATEGORY,
            description=(
                "StyleStudio teacher layout: samples an un-stylised 'teacher' (the same model without the "
                "IP-Adapter) beside your image, from the same noise, and during the early steps lets the stylised "
                "image use the teacher's self-attention maps. The layout then follows the prompt instead of the "
                "style image. Costs about 2x per step inside the window and nothing after it. Works with any "
                "sampler: ancestral/SDE samplers give the teacher the same per-step noise as your image."),
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (with an IPAdapter node before or after this one)."),
                io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the schedule where the teacher starts lending its self-attention.")),
                io.Float.Input("end_at", default=0.4, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the schedule where it stops (paper: 20 of 50 steps = 0.4; 0.2-0.33 keeps more "
                    "style, larger values keep more layout). After it the teacher is not computed.")),
                io.Boolean.Input("share_cross_attention", default=False, tooltip=(
                    "Also share the teacher's text cross-attention maps (the paper's optional variant; it reports "
                    "no extra layout stability).")),
                io.Boolean.Input("return_teacher", default=False, tooltip=(
                    "Return [your images..., teacher images...] so you can see the un-stylised layout. The "
                    "teacher then runs to the last step (slower).")),
            ],
            outputs=[io.Model.Output(tooltip="The model whose samples borrow the teacher's layout.")],
        )

    @classmethod
    def execute(cls, model, start_at, end_at, share_cross_attention, return_teacher) -> io.NodeOutput:
        check_window(FEATURE, start_at, end_at)
        check_unet(model, FEATURE)
        if end_at <= start_at and not return_teacher:
            return io.NodeOutput(patched(model, FEATURE, None))
        return io.NodeOutput(patched(model, FEATURE, {
            "share_cross_attention": bool(share_cross_attention),
            "return_teacher": bool(return_teacher),
            **schedule_window(start_at, end_at)}))  # an empty window (return_teacher only) never couples
