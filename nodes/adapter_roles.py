from comfy_api.latest import io

from ..stylestudio_core.routing import ROLES_SETTING
from .patching import CATEGORY, adapter_roles, check_unet, with_adapter_roles

FEATURE = ROLES_SETTING


class StyleStudioAdapterRoles(io.ComfyNode):
    """The user's word on which stacked IP-Adapters are style and which identity (routing.callback_role), for the
    adapters the router cannot tell. Its own node so the other nodes keep their widget contracts."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        # Input ids, order, types and widget defaults are what saved workflows store: never change them
        # (tests/test_v3_schema.py freezes them).
        return io.Schema(
            node_id="StyleStudioAdapterRoles",
            display_name="StyleStudio Adapter Roles",
            category=CATEGORY,
            description=(
                "Says which IP-Adapters on the MODEL path are style and which are identity (a face or person). "
                "Style adapters are fused by Cross-Modal AdaIN and left out of the Teacher Layout's teacher; "
                "identity adapters are added as usual and stay in the teacher, so the layout keeps the person. "
                "By default ('auto') each adapter is classified by what it declares or is (FaceID, PuLID, "
                "InstantID and portrait/full-face models are identity, everything else style); use this node "
                "when an identity adapter is not recognised, e.g. '2=identity'. Place it anywhere on the MODEL "
                "path; a later Adapter Roles node replaces this one's choice."),
            inputs=[
                io.Model.Input("model", tooltip=(
                    "The model whose IP-Adapters (applied before or after this node) the choice is for.")),
                io.String.Input("roles", default="auto", multiline=False, tooltip=(
                    "auto = decide per adapter: its declared stylestudio_role, else detected FaceID / PuLID / "
                    "InstantID / portrait (full-face) adapters are identity, else style. "
                    "N=identity or N=style sets adapter N, where N counts the IP-Adapters in the order they were "
                    "applied along the MODEL path (1 = first). all=identity or all=style sets every adapter it "
                    "cannot tell (detected ones keep their role). The forms combine, separated by commas: "
                    "'all=identity, 1=style'.")),
            ],
            outputs=[io.Model.Output(tooltip=(
                "The model with this style/identity choice, read by every StyleStudio node on the path; "
                "'auto' clears an earlier choice."))],
        )

    @classmethod
    def execute(cls, model, roles) -> io.NodeOutput:
        adapter_roles(roles, FEATURE)  # a bad spec fails here, naming this node, before anything is cloned
        check_unet(model, FEATURE)
        return io.NodeOutput(with_adapter_roles(model, roles, FEATURE))
