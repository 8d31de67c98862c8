"""Stand-in of comfy/ldm/modules/diffusionmodules/openaimodel.py: a small UNetModel with the real block layout.

The constructor takes the real unet_config keys (model_channels, channel_mult, num_res_blocks,
transformer_depth / transformer_depth_middle / transformer_depth_output, context_dim, num_head_channels or
num_heads, adm_in_channels, use_linear_in_transformer) and builds input_blocks / middle_block / output_blocks
exactly like the real class does, so block ids, SpatialTransformer positions and ``transformer_index`` values
equal the real SDXL / SD1.5 ones (comfy/supported_models.py here holds the two configs).
``forward`` goes through the DIFFUSION_MODEL wrappers and sets transformer_options["original_shape"],
["transformer_index"] (0, +1 after every SpatialTransformer), ["block"] = ("input", id) / ("middle", 0) /
("output", id), as real; input_block_patch / input_block_patch_after_skip / output_block_patch / emb_patch
lists are honoured. Simplified: no ControlNet (``control`` must be None), no video/temporal layers,
no forward_timestep_embed_patch, no codebook head, no gradient checkpointing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import comfy.patcher_extension
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding


class TimestepBlock(nn.Module):
    """A layer whose forward takes (x, emb)."""


class ResBlock(TimestepBlock):
    def __init__(self, channels, emb_channels, out_channels=None):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, output_shape=None):
        # nearest upsample to the skip connection's size (so odd sizes such as 1 -> 2 -> 4 -> 8 work)
        size = [x.shape[2] * 2, x.shape[3] * 2] if output_shape is None else [output_shape[2], output_shape[3]]
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


def forward_timestep_embed(ts, x, emb, context=None, transformer_options={}, output_shape=None, **kwargs):
    """Run one block's layers; bump transformer_options["transformer_index"] after each SpatialTransformer."""
    for layer in ts:
        if isinstance(layer, TimestepBlock):
            x = layer(x, emb)
        elif isinstance(layer, SpatialTransformer):
            x = layer(x, context, transformer_options)
            if "transformer_index" in transformer_options:
                transformer_options["transformer_index"] += 1
        elif isinstance(layer, Upsample):
            x = layer(x, output_shape=output_shape)
        else:
            x = layer(x)
    return x


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, *args, **kwargs):
        return forward_timestep_embed(self, *args, **kwargs)


class UNetModel(nn.Module):
    def __init__(self, image_size=32, in_channels=4, model_channels=32, out_channels=4, num_res_blocks=2,
                 dropout=0, channel_mult=(1, 2, 4), num_classes=None, dtype=torch.float32, num_heads=-1,
                 num_head_channels=-1, context_dim=None, use_linear_in_transformer=False, adm_in_channels=None,
                 transformer_depth=1, transformer_depth_middle=None, transformer_depth_output=None,
                 device=None, operations=None, **kwargs):
        super().__init__()
        if kwargs.get("disable_unet_model_creation"):
            raise ValueError("stand-in: disable_unet_model_creation is not supported")
        levels = len(channel_mult)
        if isinstance(num_res_blocks, int):
            num_res_blocks = [num_res_blocks] * levels
        if isinstance(transformer_depth, int):
            transformer_depth = [transformer_depth] * sum(num_res_blocks)
        if transformer_depth_output is None:
            transformer_depth_output = []
            for lvl in range(levels):
                transformer_depth_output += [transformer_depth[sum(num_res_blocks[:lvl])]] * (num_res_blocks[lvl] + 1)
        if transformer_depth_middle is None:
            transformer_depth_middle = transformer_depth[-1]
        depth_in = list(transformer_depth)       # consumed front to back (input blocks)
        depth_out = list(transformer_depth_output)  # consumed back to front (output blocks), like real

        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.dtype = dtype
        self.context_dim = context_dim
        self.use_linear_in_transformer = use_linear_in_transformer

        def heads_for(ch):
            if num_head_channels == -1:
                return num_heads, ch // num_heads
            return ch // num_head_channels, num_head_channels

        def transformer(ch, depth):
            nh, dh = heads_for(ch)
            return SpatialTransformer(ch, nh, dh, depth=depth, context_dim=context_dim,
                                      use_linear=use_linear_in_transformer)

        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            if num_classes != "sequential":
                raise ValueError("stand-in: only num_classes='sequential' (adm) is supported")
            self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(adm_in_channels, emb_dim), nn.SiLU(),
                                                         nn.Linear(emb_dim, emb_dim)))

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        ch = model_channels
        skip_chans = [ch]
        for lvl, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks[lvl]):
                layers = [ResBlock(ch, emb_dim, mult * model_channels)]
                ch = mult * model_channels
                depth = depth_in.pop(0)
                if depth > 0:
                    layers.append(transformer(ch, depth))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if lvl != levels - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_chans.append(ch)

        mid = [ResBlock(ch, emb_dim)]
        if transformer_depth_middle >= 0:
            mid += [transformer(ch, transformer_depth_middle), ResBlock(ch, emb_dim)]
        self.middle_block = TimestepEmbedSequential(*mid)

        self.output_blocks = nn.ModuleList([])
        for lvl, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks[lvl] + 1):
                layers = [ResBlock(ch + skip_chans.pop(), emb_dim, model_channels * mult)]
                ch = model_channels * mult
                depth = depth_out.pop()
                if depth > 0:
                    layers.append(transformer(ch, depth))
                if lvl and i == num_res_blocks[lvl]:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))

    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, transformer_options),
        ).execute(x, timesteps, context, y, control, transformer_options, **kwargs)

    def _forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
        if control is not None:
            raise NotImplementedError("stand-in UNetModel: ControlNet is not supported")
        # the per-call transformer_options dict is mutated in place, exactly like real
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        patches = transformer_options.get("patches", {})

        assert (y is not None) == (self.num_classes is not None), "must specify y if and only if the model is class-conditional"
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        for p in patches.get("emb_patch", []):
            emb = p(emb, self.model_channels, transformer_options)
        if self.num_classes is not None:
            assert y.shape[0] == x.shape[0]
            emb = emb + self.label_emb(y)

        hs = []
        h = x
        for bid, module in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", bid)
            h = forward_timestep_embed(module, h, emb, context, transformer_options)
            for p in patches.get("input_block_patch", []):
                h = p(h, transformer_options)
            hs.append(h)
            for p in patches.get("input_block_patch_after_skip", []):
                h = p(h, transformer_options)

        transformer_options["block"] = ("middle", 0)
        h = forward_timestep_embed(self.middle_block, h, emb, context, transformer_options)

        for bid, module in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", bid)
            hsp = hs.pop()
            for p in patches.get("output_block_patch", []):
                h, hsp = p(h, hsp, transformer_options)
            h = torch.cat([h, hsp], dim=1)
            output_shape = hs[-1].shape if hs else None
            h = forward_timestep_embed(module, h, emb, context, transformer_options, output_shape)
        return self.out(h.type(x.dtype))


class Timestep(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return timestep_embedding(t, self.dim)
