from comfy_api.latest import io

from ..stylestudio_core.mechanism import StyleStudioError
from ..stylestudio_core.style_adapter import SUPPORTED, StyleAdapterError, load_style_adapter
from .patching import CATEGORY

NODE_NAME = "StyleStudio Style Adapter Loader"
FOLDER = "ipadapter"


def adapter_folder():
    """ComfyUI's `ipadapter` model folder (models/ipadapter), registered here when no other pack did."""
    import os

    import folder_paths
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = (
            [os.path.join(folder_paths.models_dir, FOLDER)], set(folder_paths.supported_pt_extensions))
    return folder_paths


def load_for_host(path: str):
    """The adapter, its layers built with ComfyUI's casting ops and wrapped in a ModelPatcher so that ComfyUI's
    model management places and offloads it with the UNet (it is registered as an additional model of every
    MODEL it is applied to)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    adapter = load_style_adapter(path, ops=comfy.ops.manual_cast)
    adapter.host_models = [comfy.model_patcher.ModelPatcher(
        adapter.weights, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())]
    return adapter


#: The socket type between the loader and the apply node.
StyleAdapterType = io.Custom("STYLE_ADAPTER")


class StyleStudioStyleAdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        try:
            files = adapter_folder().get_filename_list(FOLDER)
        except ImportError:  # no ComfyUI (the pack's offline workflow tooling reads the schema): no folder to list
            files = []
        return io.Schema(
            node_id="StyleStudioStyleAdapterLoader",
            display_name=NODE_NAME,
            category=CATEGORY,
            description=(
                "Loads a style adapter from models/ipadapter without ComfyUI_IPAdapter_plus. The format is read "
                "from the file's weights: " + SUPPORTED + ". CSGO is the adapter of the StyleStudio paper "
                "(InstantX/CSGO, csgo_4_32.bin, with the ViT-bigG image encoder); only its style branch is used. "
                "FaceID, Kolors and other variants are refused with a message."),
            inputs=[
                io.Combo.Input("adapter_name", options=files, tooltip=(
                    "An adapter file in models/ipadapter: CSGO (csgo_4_32.bin), IP-Adapter or IP-Adapter Plus for "
                    "SD1.5 or SDXL (.safetensors preferred).")),
            ],
            outputs=[StyleAdapterType.Output(tooltip="The loaded adapter, for 'StyleStudio Apply Style Adapter'.")],
        )

    @classmethod
    def execute(cls, adapter_name) -> io.NodeOutput:
        folder_paths = adapter_folder()
        path = folder_paths.get_full_path(FOLDER, adapter_name)
        if path is None:
            raise StyleStudioError(f"{NODE_NAME}: {adapter_name!r} is not in models/ipadapter. Put the file there "
                                   "and refresh the browser page.")
        try:
            return io.NodeOutput(load_for_host(path))
        except StyleAdapterError as e:
            raise StyleStudioError(f"{NODE_NAME}: {e}") from None
