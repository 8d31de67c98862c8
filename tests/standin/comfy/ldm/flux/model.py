"""Stand-in of comfy/ldm/flux/model.py: a tiny NOT-a-UNet diffusion transformer named ``Flux``.

It exists so tests can check how the pack reacts to a non-UNet model (real Flux is an MMDiT with double/single
stream blocks, 16-channel latents and its own patch hooks). Here: 2x2 patchify, one joint text+image
attention layer, unpatchify. It goes through DIFFUSION_MODEL wrappers like the real forward does.
"""
import torch
from torch import nn

import comfy.patcher_extension
from comfy.ldm.modules.attention import optimized_attention
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding


class Flux(nn.Module):
    def __init__(self, in_channels=4, out_channels=4, hidden_size=32, num_heads=2, context_in_dim=64,
                 vec_in_dim=32, patch_size=2, dtype=torch.float32, device=None, **kwargs):
        super().__init__()
        self.dtype = dtype
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.img_in = nn.Linear(in_channels * patch_size ** 2, hidden_size)
        self.txt_in = nn.Linear(context_in_dim, hidden_size)
        self.time_in = nn.Linear(hidden_size, hidden_size)
        self.vector_in = nn.Linear(vec_in_dim, hidden_size)
        self.qkv = nn.Linear(hidden_size, hidden_size * 3)
        self.final_layer = nn.Linear(hidden_size, out_channels * patch_size ** 2)

    def forward(self, x, timestep, context, y=None, guidance=None, control=None, transformer_options={}, **kwargs):
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, transformer_options),
        ).execute(x, timestep, context, y, guidance, control, transformer_options, **kwargs)

    def _forward(self, x, timestep, context, y=None, guidance=None, control=None, transformer_options={}, **kwargs):
        b, c, h, w = x.shape
        p = self.patch_size
        img = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)
        img = self.img_in(img)
        vec = self.time_in(timestep_embedding(timestep, self.hidden_size).to(x.dtype))
        if y is not None:
            vec = vec + self.vector_in(y[:, :self.vector_in.in_features])
        txt = self.txt_in(context)
        tokens = torch.cat([txt, img], dim=1) + vec[:, None]
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        tokens = tokens + optimized_attention(q, k, v, self.num_heads)
        img = self.final_layer(tokens[:, txt.shape[1]:])
        return img.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
