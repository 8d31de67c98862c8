"""Stand-in of comfy/ldm/modules/attention.py: attention, the transformer block with ComfyUI's patch hooks,
and SpatialTransformer.

The hook protocol of ``BasicTransformerBlock.forward`` is the real one, in the real order (host.md section 1):
extra_options = shallow copy of transformer_options without "patches"/"patches_replace" plus n_heads,
dim_head, attn_precision; attn1_patch (n, context, value default to n) -> attn1 replace looked up under
(block_name, block_id, block_index) then (block_name, block_id) -> attn1_output_patch -> residual with x ->
attn2_patch -> attn2 replace -> attn2_output_patch -> residual -> feed-forward.
``optimized_attention`` is ComfyUI's pytorch-attention variant (SDPA, heads merged in the last dim).
Simplified: no ff_in / temporal / disable_self_attn variants, no "middle_patch" gligen inputs beyond calling
the list, no attention-backend selection or ``optimized_attention_override``, no gradient checkpointing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def optimized_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                        skip_output_reshape=False, **kwargs):
    """q, k, v: (B, N, heads*dim_head) (or (B, heads, N, dim_head) with skip_reshape) -> (B, N, heads*dim_head)."""
    if skip_reshape:
        b, _, _, dim_head = q.shape
    else:
        b, _, inner = q.shape
        dim_head = inner // heads
        q, k, v = (t.view(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        while mask.ndim < 4:  # (N, M) -> (1, N, M) -> (B?, 1, N, M): add batch then heads dims
            mask = mask.unsqueeze(0) if mask.ndim == 2 else mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(b, -1, heads * dim_head)


attention_pytorch = optimized_attention
optimized_attention_masked = optimized_attention


def optimized_attention_for_device(device, mask=False, small_input=False):
    return optimized_attention


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, dim_out=None, mult=4):
        super().__init__()
        inner = int(dim * mult)
        # same module path as real ("net.0.proj", "net.2") so state-dict keys look familiar
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim_out or dim))

    def forward(self, x):
        return self.net(x)


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, dropout=0.0, attn_precision=None):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.dim_head = dim_head
        self.attn_precision = attn_precision
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def forward(self, x, context=None, value=None, mask=None, transformer_options={}):
        q = self.to_q(x)
        context = x if context is None else context
        k = self.to_k(context)
        v = self.to_v(context if value is None else value)
        out = optimized_attention(q, k, v, self.heads, mask=mask, attn_precision=self.attn_precision,
                                  transformer_options=transformer_options)
        return self.to_out(out)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, d_head, dropout=0.0, context_dim=None, gated_ff=True, checkpoint=True,
                 attn_precision=None, **kwargs):
        super().__init__()
        self.attn_precision = attn_precision
        self.attn1 = CrossAttention(dim, None, n_heads, d_head, dropout, attn_precision)  # self-attention
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, n_heads, d_head, dropout, attn_precision)
        self.norm2 = nn.LayerNorm(dim)  # real registration order: attn1, ff, attn2, norm2, norm1, norm3
        self.norm1 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.n_heads = n_heads
        self.d_head = d_head
        self.is_res = True

    @staticmethod
    def _replace_for(replace: dict, block, block_index):
        # 3-tuple key (name, id, index) wins; fall back to the 2-tuple (name, id)
        if block is None:
            return replace.get(None)
        full = (block[0], block[1], block_index)
        if full in replace:
            return replace[full]
        return replace.get(block)

    def _attend(self, attn: CrossAttention, replace_fn, n, context, value, extra_options, transformer_options):
        if replace_fn is None:
            return attn(n, context=context, value=value, transformer_options=transformer_options)
        # replace: the block projects q/k/v itself, hands (B, N, heads*dim_head) tensors over, applies to_out
        q = attn.to_q(n)
        k = attn.to_k(context)
        v = attn.to_v(value)
        return attn.to_out(replace_fn(q, k, v, extra_options))

    def forward(self, x, context=None, transformer_options={}):
        block = transformer_options.get("block", None)
        block_index = transformer_options.get("block_index", 0)
        patches = transformer_options.get("patches", {})
        replaces = transformer_options.get("patches_replace", {})
        extra_options = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
        extra_options["n_heads"] = self.n_heads
        extra_options["dim_head"] = self.d_head
        extra_options["attn_precision"] = self.attn_precision

        # --- self-attention (attn1): query from norm1(x); context/value default to it --------------------
        n = self.norm1(x)
        context1 = value1 = None
        if "attn1_patch" in patches:
            context1 = n
            value1 = context1
            for p in patches["attn1_patch"]:
                n, context1, value1 = p(n, context1, value1, extra_options)
        fn = self._replace_for(replaces.get("attn1", {}), block, block_index)
        if fn is not None and context1 is None:
            context1 = value1 = n
        n = self._attend(self.attn1, fn, n, context1, value1, extra_options, transformer_options)
        for p in patches.get("attn1_output_patch", []):
            n = p(n, extra_options)
        x = n + x  # the residual uses x, not the (possibly patched) query input
        for p in patches.get("middle_patch", []):
            x = p(x, extra_options)

        # --- cross-attention (attn2): context is the text embedding -------------------------------------
        n = self.norm2(x)
        context2 = context
        value2 = None
        if "attn2_patch" in patches:
            value2 = context2
            for p in patches["attn2_patch"]:
                n, context2, value2 = p(n, context2, value2, extra_options)
        fn = self._replace_for(replaces.get("attn2", {}), block, block_index)
        if fn is not None and value2 is None:
            value2 = context2
        n = self._attend(self.attn2, fn, n, context2, value2, extra_options, transformer_options)
        for p in patches.get("attn2_output_patch", []):
            n = p(n, extra_options)
        x = n + x

        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """(B, C, H, W) -> tokens -> ``depth`` BasicTransformerBlocks -> (B, C, H, W) + residual.

    Sets transformer_options["activations_shape"] (its input shape) and ["block_index"] (0..depth-1) like real.
    ``use_linear`` picks Linear (SDXL) or 1x1 Conv (SD1.5) projections.
    """

    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0.0, context_dim=None,
                 use_linear=False, attn_precision=None, **kwargs):
        super().__init__()
        inner = n_heads * d_head
        self.in_channels = in_channels
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6, affine=True)
        self.use_linear = use_linear
        # registration order norm, proj_in, transformer_blocks, proj_out = real parameter order
        self.proj_in = nn.Linear(in_channels, inner) if use_linear else nn.Conv2d(in_channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, n_heads, d_head, dropout, context_dim=context_dim,
                                   attn_precision=attn_precision) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, in_channels) if use_linear else nn.Conv2d(inner, in_channels, 1)

    def forward(self, x, context=None, transformer_options={}):
        b, c, h, w = x.shape
        transformer_options["activations_shape"] = list(x.shape)
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.movedim(1, 3).flatten(1, 2)
        if self.use_linear:
            x = self.proj_in(x)
        for i, blk in enumerate(self.transformer_blocks):
            transformer_options["block_index"] = i
            x = blk(x, context=context, transformer_options=transformer_options)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.reshape(b, h, w, x.shape[-1]).movedim(3, 1).contiguous()
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in
