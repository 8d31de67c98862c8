"""Stand-in of comfy/ops.py: the layer namespaces other code builds modules with.

Kept from the real module: ``disable_weight_init`` layers skip parameter initialisation (they are filled later
from a state dict), and ``manual_cast`` layers cast their weight and bias to the input's device and dtype on
every call (``comfy_cast_weights = True``), so fp16 weights serve fp32 inputs and weights that model management
left on the offload device still compute on the input's device. ``cast_to`` / ``cast_to_input`` as real.
Simplified: no fp8 / scaled ops, no weight_function hooks, no CUDA streams.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cast_to(weight, dtype=None, device=None, non_blocking=False, copy=False):
    if weight is None:
        return None
    return weight.to(device=device if device is not None else weight.device,
                     dtype=dtype if dtype is not None else weight.dtype, copy=copy)


def cast_to_input(weight, input, non_blocking=False, copy=True):
    return cast_to(weight, input.dtype, input.device, copy=copy)


def cast_bias_weight(s, input=None, dtype=None, device=None):
    if input is not None:
        dtype = input.dtype if dtype is None else dtype
        device = input.device if device is None else device
    return cast_to(s.weight, dtype, device), cast_to(getattr(s, "bias", None), dtype, device)


class CastWeightBiasOp:
    comfy_cast_weights = False


class disable_weight_init:
    class Linear(torch.nn.Linear, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input):
            if not self.comfy_cast_weights:
                return super().forward(input)
            w, b = cast_bias_weight(self, input)
            return F.linear(input, w, b)

    class Conv2d(torch.nn.Conv2d, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input):
            if not self.comfy_cast_weights:
                return super().forward(input)
            w, b = cast_bias_weight(self, input)
            return self._conv_forward(input, w, b)

    class LayerNorm(torch.nn.LayerNorm, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input):
            if not self.comfy_cast_weights:
                return super().forward(input)
            w, b = cast_bias_weight(self, input) if self.weight is not None else (None, None)
            return F.layer_norm(input, self.normalized_shape, w, b, self.eps)

    class Embedding(torch.nn.Embedding, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, input, out_dtype=None):
            out = F.embedding(input, self.weight)
            return out.to(out_dtype) if out_dtype is not None else out


class manual_cast(disable_weight_init):
    class Linear(disable_weight_init.Linear):
        comfy_cast_weights = True

    class Conv2d(disable_weight_init.Conv2d):
        comfy_cast_weights = True

    class LayerNorm(disable_weight_init.LayerNorm):
        comfy_cast_weights = True

    class Embedding(disable_weight_init.Embedding):
        comfy_cast_weights = True
