"""Stand-in of comfy/conds.py: the model-cond wrappers calc_cond_batch batches with.

CONDRegular tiles to the batch size and concatenates only equal shapes; CONDCrossAttn also concatenates
different token lengths by repeating each up to their LCM (limit: 4x), like real; CONDNoiseShape crops to
an area first. Other real classes (CONDConstant, CONDList) are not needed by the stand-in models.
"""
from __future__ import annotations

import math

import torch

from comfy import utils


class CONDRegular:
    def __init__(self, cond):
        self.cond = cond

    def _copy_with(self, cond):
        return self.__class__(cond)

    def process_cond(self, batch_size, **kwargs):
        return self._copy_with(utils.repeat_to_batch_size(self.cond, batch_size))

    def can_concat(self, other):
        return self.cond.shape == other.cond.shape and self.cond.device == other.cond.device

    def concat(self, others):
        return torch.cat([self.cond] + [o.cond for o in others])

    def size(self):
        return list(self.cond.size())


class CONDNoiseShape(CONDRegular):
    def process_cond(self, batch_size, area=None, **kwargs):
        data = self.cond
        if area is not None:
            dims = len(area) // 2
            for i in range(dims):
                data = data.narrow(i + 2, area[i + dims], area[i])
        return self._copy_with(utils.repeat_to_batch_size(data, batch_size))


class CONDCrossAttn(CONDRegular):
    def can_concat(self, other):
        a, b = self.cond.shape, other.cond.shape
        if a != b:
            if a[0] != b[0] or a[2] != b[2]:
                return False
            if math.lcm(a[1], b[1]) // min(a[1], b[1]) > 4:
                return False
        return self.cond.device == other.cond.device

    def concat(self, others):
        conds = [self.cond] + [o.cond for o in others]
        n = 1
        for c in conds:
            n = math.lcm(n, c.shape[1])
        # repeating the token axis leaves attention output unchanged
        return torch.cat([c.repeat(1, n // c.shape[1], 1) for c in conds])
