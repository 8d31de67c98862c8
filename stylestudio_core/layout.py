"""Which rows of a model call belong to whom.

ComfyUI concatenates one chunk per conditioning entry (`cond_or_uncond` holds each chunk's index in the cond
list, in whatever order and grouping it chose), and every chunk holds the whole latent batch. When the teacher
is on, the latent batch itself is `[students | teachers]` (doubled by the sampling wrapper), so each chunk is
`[student rows | teacher rows]` and student row i pairs with teacher row i of the same chunk, i.e. the same
guidance branch.
"""
from __future__ import annotations

import torch


class RowLayout:
    """Row indices of one model call. Built from the call's batch size and its `cond_or_uncond`."""

    def __init__(self, rows: int, cond_or_uncond: list[int], has_teacher: bool, device=None):
        chunks = len(cond_or_uncond)
        if chunks == 0 or rows % chunks:
            raise ValueError(f"StyleStudio: {rows} rows cannot be split into {chunks} chunks")
        per_chunk = rows // chunks
        if has_teacher and per_chunk % 2:
            raise ValueError(f"StyleStudio: teacher layout expects [students | teachers] chunks, got {per_chunk} rows")
        self.rows = rows
        self.chunks = chunks
        self.per_chunk = per_chunk
        self.has_teacher = has_teacher
        self.cond_or_uncond = list(cond_or_uncond)
        half = per_chunk // 2 if has_teacher else per_chunk
        base = torch.arange(chunks).repeat_interleave(half) * per_chunk
        offset = torch.arange(half).repeat(chunks)
        self.student = (base + offset).to(device)
        self.teacher = (base + offset + half).to(device) if has_teacher else None

    def student_branches(self) -> list[int]:
        """`cond_or_uncond` as seen by the student rows alone (one entry per chunk, same order)."""
        return self.cond_or_uncond

    def borrow_teacher(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of `x` whose student rows are replaced by their teacher rows."""
        out = x.clone()
        out[self.student] = x[self.teacher]
        return out
