"""Stand-in of comfy/clip_vision.py (+ the CLIP ViT of comfy/clip_model.py) for the surfaces the pack uses.

Kept from the real modules (ComfyUI v0.3.64):
* ``clip_preprocess(image, size, mean, std, crop)``: IMAGE (B, H, W, C) in [0, 1] -> normalised (B, 3, size,
  size); ``crop=True`` scales the short side to ``size`` (bicubic, antialias) and centre-crops, ``crop=False``
  squashes; pixel values are rounded to 1/255 steps before normalising.
* ``ClipVisionModel(json_config)``: the model in ``text_encoder_dtype`` (fp16 on CPU) with ``manual_cast`` ops
  (pre/post layer norms and the projection in fp32, as real), the same module tree and parameter names and
  order (so ``init_weights_`` fills it identically), ``.patcher`` (a ModelPatcher), ``.load_device``,
  ``.image_size``; ``model(pixel_values=..., intermediate_output=-2)`` returns (last hidden state, output of the
  penultimate layer, image_embeds, None); ``encode_image(image, crop=True)`` returns an ``Output`` with
  ``last_hidden_state``, ``image_embeds``, ``penultimate_hidden_states``, ``mm_projected``.
Simplified: CLIP ViT only (no SigLIP / DINOv2 / LLaVA projector), no state-dict key conversion or file loading.
"""
from __future__ import annotations

import json

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.ops
from comfy.ldm.modules.attention import optimized_attention


class Output:
    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, item):
        setattr(self, key, item)


def clip_preprocess(image, size=224, mean=(0.48145466, 0.4578275, 0.40821073),
                    std=(0.26862954, 0.26130258, 0.27577711), crop=True):
    image = image[:, :, :, :3] if image.shape[3] > 3 else image
    mean = torch.tensor(mean, device=image.device, dtype=image.dtype)
    std = torch.tensor(std, device=image.device, dtype=image.dtype)
    image = image.movedim(-1, 1)
    if not (image.shape[2] == size and image.shape[3] == size):
        if crop:
            scale = size / min(image.shape[2], image.shape[3])
            scale_size = (round(scale * image.shape[2]), round(scale * image.shape[3]))
        else:
            scale_size = (size, size)
        image = torch.nn.functional.interpolate(image, size=scale_size, mode="bicubic", antialias=True)
        h = (image.shape[2] - size) // 2
        w = (image.shape[3] - size) // 2
        image = image[:, :, h:h + size, w:w + size]
    image = torch.clip(255.0 * image, 0, 255).round() / 255.0
    return (image - mean.view([3, 1, 1])) / std.view([3, 1, 1])


_ACT = {"gelu": torch.nn.functional.gelu, "quick_gelu": lambda a: a * torch.sigmoid(1.702 * a)}


class _Attention(torch.nn.Module):
    def __init__(self, dim, heads, dtype, device, ops):
        super().__init__()
        self.heads = heads
        self.q_proj = ops.Linear(dim, dim, bias=True, dtype=dtype, device=device)
        self.k_proj = ops.Linear(dim, dim, bias=True, dtype=dtype, device=device)
        self.v_proj = ops.Linear(dim, dim, bias=True, dtype=dtype, device=device)
        self.out_proj = ops.Linear(dim, dim, bias=True, dtype=dtype, device=device)

    def forward(self, x):
        return self.out_proj(optimized_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads))


class _MLP(torch.nn.Module):
    def __init__(self, dim, inner, act, dtype, device, ops):
        super().__init__()
        self.fc1 = ops.Linear(dim, inner, bias=True, dtype=dtype, device=device)
        self.activation = _ACT[act]
        self.fc2 = ops.Linear(inner, dim, bias=True, dtype=dtype, device=device)

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


class _Layer(torch.nn.Module):
    def __init__(self, dim, heads, inner, act, dtype, device, ops):
        super().__init__()
        self.layer_norm1 = ops.LayerNorm(dim, dtype=dtype, device=device)
        self.self_attn = _Attention(dim, heads, dtype, device, ops)
        self.layer_norm2 = ops.LayerNorm(dim, dtype=dtype, device=device)
        self.mlp = _MLP(dim, inner, act, dtype, device, ops)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(torch.nn.Module):
    def __init__(self, n, dim, heads, inner, act, dtype, device, ops):
        super().__init__()
        self.layers = torch.nn.ModuleList([_Layer(dim, heads, inner, act, dtype, device, ops) for _ in range(n)])

    def forward(self, x, intermediate_output=None):
        if intermediate_output is not None and intermediate_output < 0:
            intermediate_output = len(self.layers) + intermediate_output
        intermediate = None
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == intermediate_output:
                intermediate = x.clone()
        return x, intermediate


class _Embeddings(torch.nn.Module):
    def __init__(self, dim, channels, patch, size, dtype, device, ops):
        super().__init__()
        self.class_embedding = torch.nn.Parameter(torch.empty(dim, dtype=dtype, device=device))
        self.patch_embedding = ops.Conv2d(channels, dim, kernel_size=patch, stride=patch, bias=False, dtype=dtype,
                                          device=device)
        self.position_embedding = ops.Embedding((size // patch) ** 2 + 1, dim, dtype=dtype, device=device)

    def forward(self, pixel_values):
        x = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        cls = comfy.ops.cast_to_input(self.class_embedding, x).expand(pixel_values.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + comfy.ops.cast_to_input(self.position_embedding.weight, x)


class _Vision(torch.nn.Module):
    def __init__(self, c, dtype, device, ops):
        super().__init__()
        dim = c["hidden_size"]
        self.embeddings = _Embeddings(dim, c["num_channels"], c["patch_size"], c["image_size"], dtype, device, ops)
        self.pre_layrnorm = ops.LayerNorm(dim)
        self.encoder = _Encoder(c["num_hidden_layers"], dim, c["num_attention_heads"], c["intermediate_size"],
                                c["hidden_act"], dtype, device, ops)
        self.post_layernorm = ops.LayerNorm(dim)

    def forward(self, pixel_values, intermediate_output=None):
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        x, i = self.encoder(x, intermediate_output=intermediate_output)
        return x, i, self.post_layernorm(x[:, 0, :])


class CLIPVisionModelProjection(torch.nn.Module):
    def __init__(self, config, dtype, device, ops):
        super().__init__()
        self.vision_model = _Vision(config, dtype, device, ops)
        self.visual_projection = ops.Linear(config["hidden_size"], config["projection_dim"], bias=False)

    def forward(self, pixel_values=None, attention_mask=None, intermediate_output=None):
        x = self.vision_model(pixel_values, intermediate_output=intermediate_output)
        return x[0], x[1], self.visual_projection(x[2]), None


class ClipVisionModel:
    def __init__(self, json_config):
        with open(json_config) as f:
            config = json.load(f)
        if config.get("model_type", "clip_vision_model") != "clip_vision_model":
            raise NotImplementedError("stand-in: CLIP ViT only")
        self.image_size = config.get("image_size", 224)
        self.image_mean = config.get("image_mean", [0.48145466, 0.4578275, 0.40821073])
        self.image_std = config.get("image_std", [0.26862954, 0.26130258, 0.27577711])
        self.load_device = comfy.model_management.get_torch_device()
        offload = comfy.model_management.unet_offload_device()
        self.dtype = torch.float16  # text_encoder_dtype() on CPU
        self.model = CLIPVisionModelProjection(config, self.dtype, offload, comfy.ops.manual_cast)
        self.model.eval()
        self.patcher = comfy.model_patcher.ModelPatcher(self.model, load_device=self.load_device,
                                                        offload_device=offload)

    def load_sd(self, sd):
        return self.model.load_state_dict(sd, strict=False)

    def get_sd(self):
        return self.model.state_dict()

    def encode_image(self, image, crop=True):
        comfy.model_management.load_model_gpu(self.patcher)
        pixel_values = clip_preprocess(image.to(self.load_device), size=self.image_size, mean=self.image_mean,
                                       std=self.image_std, crop=crop).float()
        out = self.model(pixel_values=pixel_values, intermediate_output=-2)
        outputs = Output()
        outputs["last_hidden_state"] = out[0].to(comfy.model_management.intermediate_device())
        outputs["image_embeds"] = out[2].to(comfy.model_management.intermediate_device())
        outputs["penultimate_hidden_states"] = out[1].to(comfy.model_management.intermediate_device())
        outputs["mm_projected"] = out[3]
        return outputs
