"""Which rows of a model call belong to whom.

ComfyUI concatenates one chunk per conditioning entry (`cond_or_uncond` holds each chunk's index in the cond
list, in whatever order and grouping it chose), and every chunk holds the whole latent batch. When the teacher
is on, the latent batch itself is `[students | teachers]` (doubled by the sampling wrapper), so each chunk is
`[student rows | teacher rows]` and student row i pairs with teacher row i of the same chunk, i.e. the same
guidance branch.

Because of that regular layout every row operation is a strided view of the batch, with no index tensor on the
device (no host-to-device copy, no gather): selecting rows, borrowing the teacher's rows and putting student
and teacher rows back together each cost one pass over the tensor at most.
"""
from __future__ import annotations

import torch


class RowLayout:
    """Row layout of one model call. Built from the call's batch size and its `cond_or_uncond`; a run reuses it
    for every call with the same shape (the mechanism caches it on the run state)."""

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
        self.half = per_chunk // 2 if has_teacher else per_chunk

    # Row indices (host-side, for tests and reports; the row operations below never use them).
    @property
    def student(self) -> torch.Tensor:
        base = torch.arange(self.chunks).repeat_interleave(self.half) * self.per_chunk
        return base + torch.arange(self.half).repeat(self.chunks)

    @property
    def teacher(self) -> torch.Tensor | None:
        return self.student + self.half if self.has_teacher else None

    def student_branches(self) -> list[int]:
        """`cond_or_uncond` as seen by the student rows alone (one entry per chunk, same order)."""
        return self.cond_or_uncond

    def _pairs(self, x: torch.Tensor) -> torch.Tensor:
        # (chunks, 2, half, ...): [:, 0] the student rows, [:, 1] the teacher rows of each chunk
        return x.reshape((self.chunks, 2, self.half) + tuple(x.shape[1:]))

    def students(self, x: torch.Tensor) -> torch.Tensor:
        """The student rows of `x`, in chunk order (all rows when there is no teacher)."""
        if not self.has_teacher:
            return x
        return self._pairs(x)[:, 0].reshape((self.chunks * self.half,) + tuple(x.shape[1:]))

    def teachers(self, x: torch.Tensor) -> torch.Tensor:
        return self._pairs(x)[:, 1].reshape((self.chunks * self.half,) + tuple(x.shape[1:]))

    def merge(self, students: torch.Tensor, teachers: torch.Tensor) -> torch.Tensor:
        """The call's rows from its student rows and its teacher rows (one pass)."""
        rest = tuple(students.shape[1:])
        return torch.stack([students.reshape((self.chunks, self.half) + rest),
                            teachers.reshape((self.chunks, self.half) + rest).to(students.dtype)],
                           dim=1).view((self.rows,) + rest)

    def borrow_teacher(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of `x` whose student rows are replaced by their teacher rows (one pass)."""
        pairs = self._pairs(x)
        return pairs[:, 1:2].expand(pairs.shape).reshape(x.shape)
