import torch
from comfy_api.latest import io

from ..stylestudio_core.mechanism import STYLE_OFF_KEY, StyleStudioError
from ..stylestudio_core.style_adapter import BASE_NAMES, BLOCKS, StyleAdapter, StyleAdapterError, install, style_tokens
from .patching import CATEGORY, clone_sharing_patches
from .style_adapter_loader import StyleAdapterType

NODE_NAME = "StyleStudio Apply Style Adapter"
ADDITIONAL_MODELS_KEY = "stylestudio_style_adapter"


def _fail(message: str):
    raise StyleStudioError(f"{NODE_NAME}: {message}")


def _unet_layers(model) -> dict:
    """{attn2 patch key: (query width, context width)} for every cross-attention layer the UNet really has."""
    try:
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    except ImportError:  # pragma: no cover
        UNetModel = None
    dm = getattr(getattr(model, "model", None), "diffusion_model", None)
    if UNetModel is None or not isinstance(dm, UNetModel):
        family = type(dm).__name__ if dm is not None else type(model).__name__
        _fail(f"this model is a {family}, not a UNet. Style adapters work on SD1.5 and SDXL models.")
    found = {}
    for block, blocks in (("input", dm.input_blocks), ("middle", [dm.middle_block]), ("output", dm.output_blocks)):
        for bid, module in enumerate(blocks):
            for layer in module:
                for idx, tb in enumerate(getattr(layer, "transformer_blocks", [])):
                    attn2 = tb.attn2
                    widths = (attn2.to_q.out_features, attn2.to_k.in_features)
                    found[(block, bid, idx)] = widths
                    found.setdefault((block, bid), widths)
    return found


def _check_fits(adapter: StyleAdapter, layers, model):
    unet = _unet_layers(model)
    spec = adapter.spec
    contexts = {w[1] for w in unet.values()}
    if contexts and spec.context_dim not in contexts:
        _fail(f"{adapter.source} is a {spec.label} adapter (text context {spec.context_dim}) but this model's "
              f"cross-attention reads a {sorted(contexts)[0]}-wide context. Use an adapter made for this model's "
              f"family ({' or '.join(BASE_NAMES.values())}).")
    for layer in layers:
        key = (layer.block, layer.block_id, layer.block_index)
        if key in unet and unet[key][0] != spec.layer_widths[layer.module_key]:
            _fail(f"{adapter.source} layer {layer.module_key} is {spec.layer_widths[layer.module_key]} wide but the "
                  f"model's {layer.block} block {layer.block_id} is {unet[key][0]} wide: not a model of the family "
                  "this adapter was trained for.")


def _encoder(clip_vision, feature: str):
    import comfy.model_management as mm

    def encode(images):
        # ComfyUI's own preprocessing: the short side scaled to the encoder's size (224), centre crop, CLIP
        # mean/std -- what the reference CLIPImageProcessor does.
        return getattr(clip_vision.encode_image(images, crop=True), feature)

    def encode_zero_pixels():
        # The reference IP-Adapter Plus code encodes `zeros_like(clip_image)`: zero *after* normalisation, which
        # no IMAGE input gives (a black image normalises to -mean/std), so the encoder is called directly.
        mm.load_model_gpu(clip_vision.patcher)
        size = getattr(clip_vision, "image_size", 224)
        pixels = torch.zeros(1, 3, size, size, device=clip_vision.load_device)
        out = clip_vision.model(pixel_values=pixels, intermediate_output=-2)
        return out[1].to(mm.intermediate_device())
    return encode, encode_zero_pixels


def _callback_window(model, start_at: float, end_at: float) -> dict:
    """The adapter callbacks' window in IPAdapter_plus's protocol: sigmas of the model sampling the node sees (as
    IPAdapter_plus fixes its own), so the router reads both kinds of callback alike."""
    sampling = model.get_model_object("model_sampling")
    return {"sigma_start": float(sampling.percent_to_sigma(start_at)),
            "sigma_end": float(sampling.percent_to_sigma(end_at))}


def apply_style_adapter(model, adapter: StyleAdapter, clip_vision, image, weight, blocks, start_at, end_at,
                        image_negative=None, attn_mask=None):
    import comfy.model_management as mm
    from comfy.ldm.modules.attention import optimized_attention

    spec = adapter.spec
    layers = spec.layers_for(blocks)
    _check_fits(adapter, layers, model)
    if weight == 0 or end_at <= start_at:
        # Effect off: nothing is added (sampling is bit-identical), but StyleStudio nodes on this model learn the
        # style was switched off on purpose, so AdaIN/Style Guidance give the text-only result instead of the
        # "no IP-Adapter" error.
        m = clone_sharing_patches(model)
        m.model_options.setdefault("transformer_options", {})[STYLE_OFF_KEY] = True
        return m

    patcher = adapter.host_models[0] if adapter.host_models else None
    if patcher is not None:
        mm.load_model_gpu(patcher)  # the projector runs where model management put the adapter
    encode, encode_zero = _encoder(clip_vision, spec.feature)
    try:
        cond, uncond = style_tokens(adapter, encode, encode_zero, image, image_negative)
    except RuntimeError as e:
        _fail(f"the CLIP vision model does not fit {adapter.source} ({spec.label}; it needs "
              f"{spec.feature_dim}-wide {spec.feature}): {str(e)[:200]}. Use the image encoder the adapter was "
              "trained with (ViT-bigG for CSGO and the SDXL 'vit-g' adapters, ViT-H for the others).")
    device = mm.get_torch_device()
    mask = None
    if attn_mask is not None:
        mask = attn_mask.reshape((-1,) + tuple(attn_mask.shape[-2:])).to(device, torch.float32)

    m = clone_sharing_patches(model)  # never a copy of another node's adapter (install copies what it changes)
    to = dict(m.model_options.get("transformer_options", {}))
    replace = dict(to.get("patches_replace", {}))
    replace["attn2"] = install(replace.get("attn2", {}), adapter, layers, attention=optimized_attention,
                               cond=cond.to(device), uncond=uncond.to(device), weight=float(weight), mask=mask,
                               **_callback_window(model, start_at, end_at))
    to["patches_replace"] = replace
    m.model_options["transformer_options"] = to
    if patcher is not None:
        # ComfyUI loads a MODEL's additional models with it before sampling (low-VRAM partial loading included)
        models = list(m.get_additional_models_with_key(ADDITIONAL_MODELS_KEY))
        if not any(x.model is patcher.model for x in models):
            models.append(patcher)
        m.set_additional_models(ADDITIONAL_MODELS_KEY, models)
    return m


class StyleStudioApplyStyleAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # Input ids, order, types and widget defaults/ranges are what saved workflows store: never change them
        # (tests/test_v3_schema.py freezes them).
        return io.Schema(
            node_id="StyleStudioApplyStyleAdapter",
            display_name=NODE_NAME,
            category=CATEGORY,
            description=(
                "Adds a style image to the model through a native style adapter (CSGO, IP-Adapter or IP-Adapter "
                "Plus, from 'StyleStudio Style Adapter Loader'), without ComfyUI_IPAdapter_plus. Its style reaches "
                "attention through the same routing as IPAdapter_plus's, so Cross-Modal AdaIN, Teacher Layout and "
                "Style Guidance work on it, and it stacks with IPAdapter_plus nodes on the same model in either "
                "order. image_negative becomes the negative style of the paper's style-based CFG."),
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5 or SDXL model (the family the adapter was trained for)."),
                StyleAdapterType.Input("style_adapter", tooltip="From 'StyleStudio Style Adapter Loader'."),
                io.ClipVision.Input("clip_vision", tooltip=(
                    "The image encoder the adapter was trained with: ViT-bigG for CSGO and the SDXL 'vit-g' "
                    "IP-Adapters, ViT-H for the others (Load CLIP Vision).")),
                io.Image.Input("image", tooltip=(
                    "The style image. Non-square images are scaled so the short side is 224 and centre-cropped, as "
                    "the reference code does; pad to a square first to keep the borders. Several images are "
                    "combined (their tokens concatenated).")),
                io.Float.Input("weight", default=1.0, min=-1.0, max=5.0, step=0.05, tooltip=(
                    "Strength of the style: the style attention output is multiplied by it (0 = the model "
                    "unchanged). With Cross-Modal AdaIN, 1 is the paper's setting.")),
                io.Combo.Input("blocks", options=list(BLOCKS), default="up", tooltip=(
                    "Which cross-attention layers get the style. style: SDXL output block 1 (InstantStyle's style "
                    "block); on SD1.5 the layers of IPAdapter_plus's 'style transfer'. up: every output (up) block, "
                    "CSGO's setting and the paper's. all: every layer with style weights in the file, middle block "
                    "included (for CSGO the same as up).")),
                io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the schedule where the style starts (0 = first step).")),
                io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Fraction of the schedule where it stops (1 = last step).")),
                io.Image.Input("image_negative", optional=True, tooltip=(
                    "Negative style image: its tokens become the unconditional style (the paper's style-based CFG: "
                    "the reference's layout without the wanted style). Without it the adapter's own unconditional "
                    "tokens are used.")),
                io.Mask.Input("attn_mask", optional=True, tooltip=(
                    "Where the style applies (1) in the image; resized to each layer.")),
            ],
            outputs=[io.Model.Output(tooltip="The model with the style adapter in its cross-attention layers.")],
        )

    @classmethod
    def execute(cls, model, style_adapter, clip_vision, image, weight, blocks, start_at, end_at,
                image_negative=None, attn_mask=None) -> io.NodeOutput:
        if not isinstance(style_adapter, StyleAdapter):
            _fail("style_adapter must come from 'StyleStudio Style Adapter Loader'.")
        for name, value, low, high in (("weight", weight, -1.0, 5.0), ("start_at", start_at, 0.0, 1.0),
                                       ("end_at", end_at, 0.0, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                _fail(f"{name} must be a number in [{low}, {high}], got {value!r}.")
        if end_at < start_at:
            _fail(f"end_at ({end_at}) is before start_at ({start_at}); set end_at >= start_at.")
        if blocks not in BLOCKS:
            _fail(f"blocks must be one of {', '.join(BLOCKS)}, got {blocks!r}.")
        if clip_vision is None or not hasattr(clip_vision, "encode_image"):
            _fail("clip_vision must be a CLIP_VISION model (Load CLIP Vision).")
        try:
            return io.NodeOutput(apply_style_adapter(model, style_adapter, clip_vision, image, weight, blocks,
                                                     start_at, end_at, image_negative, attn_mask))
        except StyleAdapterError as e:
            _fail(str(e))
