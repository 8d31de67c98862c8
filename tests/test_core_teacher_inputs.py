"""The teacher's per-image inputs, hand-over between samplers and schedule checks, in pure torch (no host):
teacher row i gets what student row i gets, a later sampler continues the teacher, runs past the window skip it."""
import torch

from stylestudio_core_import import core

mechanism = core.mechanism


class TiledCond:
    """comfy/conds.py CONDRegular semantics: process_cond tiles (or cuts) to the batch."""

    def __init__(self, cond):
        self.cond = cond

    def process_cond(self, batch_size, **kwargs):
        reps = -(-batch_size // self.cond.shape[0])
        return TiledCond(self.cond.repeat((reps,) + (1,) * (self.cond.ndim - 1))[:batch_size])


class ConstantCond:
    def __init__(self, cond):
        self.cond = cond

    def process_cond(self, batch_size, **kwargs):
        return ConstantCond(self.cond)


def rows(t):
    return [int(v) for v in t.flatten(1)[:, 0]]


def test_model_conds_and_masks_are_the_students_for_the_teacher_rows():
    state = mechanism.RunState(batch=3, cfg=5.0, teacher=True)
    entry = {"model_conds": {"c": TiledCond(torch.arange(2.0).reshape(2, 1)), "k": ConstantCond(7)},
             "mask": torch.arange(2.0).reshape(2, 1, 1).expand(2, 4, 4).clone()}
    (doubled,), none = state.teacher_conds([[entry], None])
    assert none is None
    assert rows(doubled["model_conds"]["c"].process_cond(batch_size=6).cond) == [0, 1, 0, 0, 1, 0]
    assert doubled["model_conds"]["k"].process_cond(batch_size=6).cond == 7
    assert rows(doubled["mask"]) == [0, 1, 0, 1]  # ComfyUI reads mask[:rows] and tiles: rows 0 1 0 | 0 1 0
    # another row count (the teacher dropped): exactly the inner cond's own processing
    assert rows(doubled["model_conds"]["c"].process_cond(batch_size=3).cond) == [0, 1, 0]
    assert state.teacher_conds([[entry]])[0][0] is doubled  # built once per run
    assert rows(entry["model_conds"]["c"].cond) == [0, 1]  # the run's conds are untouched


class RecordingControl:
    """A control whose output rows are x_noisy + its hint per row (hint i = i), fitted like ComfyUI: tiled per
    chunk, or row by row when the counts match."""

    def __init__(self, hints):
        self.hints, self.calls = hints, []

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        self.calls.append((x_noisy.shape[0], rows(cond["c_crossattn"])))
        n = x_noisy.shape[0]
        h = self.hints if self.hints.shape[0] == n else self.hints[: n // batched_number].repeat(batched_number, 1)
        return {"output": [x_noisy.flatten(1)[:, :1] * 0 + h, None]}


def test_controls_run_per_half_and_come_back_in_row_order():
    state = mechanism.RunState(batch=1, cfg=5.0, teacher=True)
    control = RecordingControl(torch.tensor([[10.0], [11.0]]))  # two hints, latent batch 1
    pos, neg = {"model_conds": {}, "control": control}, {"model_conds": {}, "control": control}
    (p,), (n,) = state.teacher_conds([[pos], [neg]])
    assert p["control"] is n["control"]  # shared, so the chunks still batch together
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1, 1)  # chunks [student, teacher] x 2
    out = p["control"].get_control(x, torch.zeros(4), {"c_crossattn": torch.arange(4.0).reshape(4, 1)}, 2, {})
    # each half is a plain call of 2 rows: ComfyUI gives it the hints row by row (10, 11)
    assert control.calls == [(2, [0, 2]), (2, [1, 3])]
    assert rows(out["output"][0]) == [10, 10, 11, 11] and out["output"][1] is None


class FakeGuider:
    def __init__(self, teacher):
        self.model_options = {"transformer_options": {mechanism.SETTINGS_KEY: {"teacher": teacher}}}
        self.cfg = 5.0


class Sampler:
    """Stands for ComfyUI's sampling: returns the latent it was given plus one per call (students and
    teachers alike), recording what it got."""

    def __init__(self, guider, drop=False):
        self.class_obj, self.got, self.drop = guider, [], drop

    def __call__(self, noise, latent, *rest):
        self.got.append(latent.clone())
        if self.drop:
            self.class_obj.model_options["transformer_options"][mechanism.RUN_KEY].teacher_dropped = True
        return latent + 1 + torch.arange(latent.shape[0], dtype=latent.dtype).reshape(-1, 1, 1, 1) * 100


WINDOW = {"sigma_start": 1e9, "sigma_end": 3.0, "share_cross_attention": False}


def run(teacher, latent, noise=None, sigmas=(10.0, 5.0, 0.0), drop=False):
    sampler = Sampler(FakeGuider(teacher), drop)
    noise = torch.randn(latent.shape) if noise is None else noise
    out = mechanism.outer_sample(sampler, noise, latent, None, torch.tensor(sigmas), None, None, True, 0)
    return out, sampler.got


def test_a_later_sampler_continues_the_handed_over_teacher():
    first, _ = run({**WINDOW, "return_teacher": False}, torch.zeros(2, 1, 2, 2))
    assert first.shape[0] == 2
    second, got = run({**WINDOW, "return_teacher": True}, first.clone(), noise=torch.zeros(2, 1, 2, 2),
                      sigmas=(5.0, 2.0, 0.0))
    assert rows(got[0]) == [1, 101, 201, 301]  # students, then the first run's teacher rows (not the students)
    # return_teacher output of a first pass: [students | teachers] rows stay a teacher, batch 2, even without a
    # Teacher Layout on the second model (here: settings without teacher)
    kept, _ = run({**WINDOW, "return_teacher": True}, torch.zeros(2, 1, 2, 2))
    sampler = Sampler(FakeGuider(None))
    sampler.class_obj.model_options["transformer_options"][mechanism.SETTINGS_KEY] = {}
    out = mechanism.outer_sample(sampler, torch.zeros(4, 1, 2, 2), kept.clone(), None, torch.tensor([5.0, 0.0]),
                                 None, None, True, 0)
    assert rows(sampler.got[0]) == rows(kept) and out.shape[0] == 4
    state = sampler.class_obj.model_options["transformer_options"][mechanism.RUN_KEY]
    assert state.batch == 2 and state.teacher


def test_a_changed_latent_is_not_a_hand_over():
    first, _ = run({**WINDOW, "return_teacher": False}, torch.zeros(1, 1, 2, 2))
    _, got = run({**WINDOW, "return_teacher": True}, first + 1e-3, noise=torch.zeros(1, 1, 2, 2))
    assert torch.equal(got[0][0], got[0][1])  # the teacher starts from the given latent


def test_a_schedule_past_the_window_skips_the_teacher():
    assert mechanism.teacher_window_missed(torch.tensor([2.0, 1.0, 0.0]), {"sigma_start": 9.0, "sigma_end": 3.0})
    assert not mechanism.teacher_window_missed(torch.tensor([4.0, 1.0, 0.0]), {"sigma_start": 9.0, "sigma_end": 3.0})
    assert not mechanism.teacher_window_missed(torch.tensor([2.0, 0.0]), {"sigma_start": -1.0, "sigma_end": -1.0})
    out, got = run({**WINDOW, "return_teacher": False}, torch.zeros(2, 1, 2, 2), sigmas=(2.0, 1.0, 0.0))
    assert got[0].shape[0] == 2 and out.shape[0] == 2  # no teacher rows at all
