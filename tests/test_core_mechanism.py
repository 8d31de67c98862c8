"""The shared mechanism's pure-torch parts: row layout, teacher coupling maths (fact 6), IP routing, the
sampling hooks' batch handling, and the split-scale guidance formula (fact 8). No host needed."""
import math

import pytest
import torch
import torch.nn.functional as F

from stylestudio_core_import import core

layout_mod, routing, mechanism, guidance = core.layout, core.routing, core.mechanism, core.guidance
HEADS = 2


def attention(q, k, v, heads, **_):
    b, n, c = q.shape
    split = lambda t: t.view(b, -1, heads, c // heads).transpose(1, 2)
    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, n, c)


def explicit_attention(q, k, v, heads):  # reference only: materialises the map
    b, n, c = q.shape
    split = lambda t: t.view(b, -1, heads, c // heads).transpose(1, 2)
    w = (split(q) @ split(k).transpose(-1, -2) / math.sqrt(c // heads)).softmax(-1)
    return (w @ split(v)).transpose(1, 2).reshape(b, n, c)


def test_row_layout_pairs_students_with_teachers_of_the_same_chunk():
    lay = layout_mod.RowLayout(8, [1, 0], has_teacher=True)
    assert lay.student.tolist() == [0, 1, 4, 5] and lay.teacher.tolist() == [2, 3, 6, 7]
    lay = layout_mod.RowLayout(3, [2, 1, 0], has_teacher=False)
    assert lay.student.tolist() == [0, 1, 2] and lay.teacher is None
    with pytest.raises(ValueError):
        layout_mod.RowLayout(6, [1, 0], has_teacher=True)


def test_teacher_attn1_patch_gives_teacher_queries_keys_over_student_values():  # fact 6
    g = torch.Generator().manual_seed(0)
    n = torch.randn(4, 16, 8, generator=g)  # chunks [1, 0], each [student, teacher]
    wq, wk, wv = (torch.randn(8, 8, generator=g) for _ in range(3))
    plan = routing.CallPlan(has_teacher=True, couple=True)
    eo = {routing.PLAN_KEY: plan, "cond_or_uncond": [1, 0]}
    q_in, k_in, v_in = routing.teacher_attn1_patch(n, n, n, eo)
    assert k_in is None  # the block then takes keys from the query source (CrossAttention: context = x)
    out = attention(q_in @ wq, q_in @ wk, v_in @ wv, HEADS)
    # with another node's attn1 replace on the block, context must be explicit
    replaced = routing.CallPlan(has_teacher=True, couple=True, attn1_replace_keys=[("input", 4)])
    q_r, k_r, v_r = routing.teacher_attn1_patch(n, n, n, {**eo, routing.PLAN_KEY: replaced, "block": ("input", 4),
                                                          "block_index": 0})
    assert torch.equal(k_r, q_in) and torch.equal(q_r, q_in) and v_r is n
    for s, t in ((0, 1), (2, 3)):
        expected = explicit_attention((n[t:t + 1] @ wq), (n[t:t + 1] @ wk), (n[s:s + 1] @ wv), HEADS)
        torch.testing.assert_close(out[s:s + 1], expected, atol=1e-5, rtol=1e-5)
        plain = attention(n[t:t + 1] @ wq, n[t:t + 1] @ wk, n[t:t + 1] @ wv, HEADS)
        assert torch.equal(out[t:t + 1], plain)  # teacher rows: ordinary self-attention
    assert routing.teacher_attn1_patch(n, n, n, {routing.PLAN_KEY: routing.CallPlan(has_teacher=True),
                                                 "cond_or_uncond": [1, 0]})[0] is n


class FakeIP:
    """IPAdapter_plus's patch protocol (host.md §7) in miniature: per-chunk token choice from cond_or_uncond."""

    def __init__(self, weight=1.0, sigma_start=1e9, sigma_end=0.0, zero=False):
        g = torch.Generator().manual_seed(1)
        self.tokens = {0: torch.randn(1, 4, 8, generator=g), 1: torch.randn(1, 4, 8, generator=g)}
        self.callback = [self.term]
        self.kwargs = [dict(weight=weight, sigma_start=sigma_start, sigma_end=sigma_end, zero=zero)]
        self.seen = []

    def term(self, out, q, k, v, extra_options, weight, zero, **_):
        cou = extra_options["cond_or_uncond"]
        self.seen.append(list(cou))
        if zero:
            return 0
        per = q.shape[0] // len(cou)
        if 2 in cou and len(cou) != 3:
            raise IndexError("tuple index out of range")
        kv = torch.cat([self.tokens[(0, 1, 0)[i]].expand(per, -1, -1) for i in cou])
        return attention(q, kv, kv, HEADS) * weight

    def __call__(self, q, k, v, extra_options):
        out = attention(q, k, v, extra_options["n_heads"])
        for cb, kw in zip(self.callback, self.kwargs):
            out = out + cb(out, q, k, v, extra_options, **kw)
        return out


def _qkv(rows=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 16, 8, generator=g), torch.randn(rows, 5, 8, generator=g), torch.randn(rows, 5, 8, generator=g)


def _eo(plan, cou=(1, 0)):
    return {routing.PLAN_KEY: plan, "cond_or_uncond": list(cou), "n_heads": HEADS, "sigmas": torch.tensor([5.0])}


def test_route_with_nothing_to_do_delegates_bit_identically():
    ip, (q, k, v) = FakeIP(), _qkv()
    route = routing.IPRoute(ip, routing.CallPlan(), attention)
    assert torch.equal(route(q, k, v, _eo(route.plan)), ip(q, k, v, _eo(route.plan)))


def test_route_gives_teacher_rows_text_only_and_students_the_ip_sum():
    ip, (q, k, v) = FakeIP(), _qkv()
    plan = routing.CallPlan(has_teacher=True)
    out = routing.IPRoute(ip, plan, attention)(q, k, v, _eo(plan))
    text = attention(q, k, v, HEADS)
    s, t = [0, 2], [1, 3]
    assert torch.equal(out[t], text[t])
    torch.testing.assert_close(out[s], ip(q[s], k[s], v[s], _eo(plan)), atol=1e-6, rtol=1e-6)
    assert ip.seen[0] == [1, 0]  # the callback saw one student row per chunk


def test_route_fuses_with_adain_and_treats_zero_ip_as_absent():
    ip, (q, k, v) = FakeIP(weight=0.7), _qkv()
    plan = routing.CallPlan(adain_strength=1.0)
    out = routing.IPRoute(ip, plan, attention)(q, k, v, _eo(plan))
    text = attention(q, k, v, HEADS)
    ipterm = ip.term(text, q, k, v, _eo(plan), weight=0.7, zero=False)
    torch.testing.assert_close(out, core.adain.cross_modal_adain(text, ipterm))
    zero = FakeIP(zero=True)
    assert torch.equal(routing.IPRoute(zero, plan, attention)(q, k, v, _eo(plan)), text)
    outside = FakeIP(sigma_start=2.0, sigma_end=1.0)  # the call's sigma (5) is outside the adapter's window
    assert torch.equal(routing.IPRoute(outside, plan, attention)(q, k, v, _eo(plan)), text)


def test_extra_branch_gets_uncond_tokens_in_any_batching():
    ip = FakeIP()
    plan = routing.CallPlan(token_branch={2: 1})
    for cou in ([2], [2, 1], [1, 0, 2], [0, 2]):
        q, k, v = _qkv(rows=len(cou))
        routing.IPRoute(ip, plan, attention)(q, k, v, _eo(plan, cou))  # no IndexError
        assert ip.seen[-1] == [1 if i == 2 else i for i in cou]


def test_unknown_ip_object_uses_the_generic_route():
    class Attn2Replace:  # an IP object whose internals we do not know
        def __init__(self):
            self.inner = FakeIP()

        def __call__(self, q, k, v, eo):
            return self.inner(q, k, v, eo)

    q, k, v = _qkv()
    plan = routing.CallPlan(adain_strength=1.0)
    obj = Attn2Replace()
    assert routing.is_ip_patch(obj) and not routing.has_callback_protocol(obj)
    out = routing.IPRoute(obj, plan, attention)(q, k, v, _eo(plan))
    known = routing.IPRoute(obj.inner, plan, attention)(q, k, v, _eo(plan))
    torch.testing.assert_close(out, known, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------- sampling hooks
class FakeExecutor:
    def __init__(self, fn, class_obj=None):
        self.fn, self.class_obj, self.calls = fn, class_obj, []

    def __call__(self, *args):
        self.calls.append(args)
        return self.fn(*args)


class FakeGuider:
    def __init__(self, settings, ip=True, cfg=5.0):
        to = {mechanism.SETTINGS_KEY: settings}
        if ip:
            to["patches_replace"] = {"attn2": {("output", 1, 0): FakeIP()}}
        self.model_options, self.cfg = {"transformer_options": to}, cfg


TEACHER = {"sigma_start": 1e9, "sigma_end": 3.0, "share_cross_attention": False, "return_teacher": False}


def test_outer_sample_doubles_with_identical_noise_and_slices_back():
    guider = FakeGuider({"teacher": dict(TEACHER)})
    previews = []
    ex = FakeExecutor(lambda noise, latent, *rest: (rest[3](0, noise, noise, 1), noise * 2)[1], guider)
    noise = torch.randn(3, 4, 2, 2)
    out = mechanism.outer_sample(ex, noise, torch.zeros(1, 4, 2, 2), None, None, None,
                                 lambda *a: previews.append(a), True, 0)
    sent = ex.calls[0][0]
    assert torch.equal(sent[:3], noise) and torch.equal(sent[3:], noise)
    assert ex.calls[0][1].shape[0] == 6
    assert torch.equal(out, noise * 2) and previews[0][1].shape[0] == 3
    guider = FakeGuider({"teacher": dict(TEACHER, return_teacher=True)})
    out = mechanism.outer_sample(FakeExecutor(lambda n, *r: n, guider), noise, torch.zeros(3, 4, 2, 2), None,
                                 None, None, None, True, 0)
    assert out.shape[0] == 6


@pytest.mark.parametrize("mask_shape", [(8, 8), (1, 8, 8), (2, 8, 8), (2, 1, 8, 8), (3, 1, 8, 8)])
def test_outer_sample_pairs_each_teacher_with_its_students_noise_mask(mask_shape):
    guider = FakeGuider({"teacher": dict(TEACHER)})
    ex = FakeExecutor(lambda noise, latent, sampler, sigmas, mask, *rest: noise, guider)
    mask = torch.rand(mask_shape)
    mechanism.outer_sample(ex, torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8), None, None, mask, None, True, 0)
    sent = ex.calls[0][4]
    rows = mask.reshape(-1, 1, 8, 8)
    if rows.shape[0] == 1:
        assert torch.equal(sent, rows)  # ComfyUI broadcasts a single mask to every row
    else:
        assert torch.equal(sent[:2], rows[:2]) and torch.equal(sent[2:], rows[:2])


def test_outer_sample_without_ip_is_an_error_for_adain_and_guidance():
    for feature, settings in (("AdaIN", {"adain": {}}), ("Guidance", {"guidance": {}})):
        with pytest.raises(mechanism.StyleStudioError, match="IPAdapter"):
            mechanism.outer_sample(FakeExecutor(lambda *a: None, FakeGuider(settings, ip=False)),
                                   torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), None, None, None, None, True, 0)


def _options(settings, batch, cfg=5.0, teacher=True):
    to = {mechanism.SETTINGS_KEY: settings, mechanism.RUN_KEY: mechanism.RunState(batch, cfg, teacher),
          "patches_replace": {"attn2": {("output", 1, 0): FakeIP()}}}
    return {"transformer_options": to}


def test_teacher_rows_are_dropped_after_the_window_for_good():
    options = _options({"teacher": dict(TEACHER)}, batch=2)
    ex = FakeExecutor(lambda model, conds, x, t, mo: [x * 0.5 for _ in conds])
    x = torch.randn(4, 4, 2, 2)
    for sigma, rows in ((5.0, 4), (2.0, 2), (4.0, 2)):  # inside, after, and a restart back up
        out = mechanism.calc_cond_batch(ex, None, [["c"], ["u"]], x, torch.full((4,), sigma), options,
                                        attention=attention)
        assert ex.calls[-1][2].shape[0] == rows and out[0].shape[0] == 4
    assert torch.equal(out[0][:2], x[:2] * 0.5) and torch.equal(out[0][2:], x[2:])


def test_plan_routes_only_a_copy_of_the_options():
    options = _options({"teacher": dict(TEACHER), "adain": {"strength": 1.0, "sigma_start": 1e9, "sigma_end": 0}}, 1)
    original = options["transformer_options"]["patches_replace"]["attn2"][("output", 1, 0)]
    seen = {}

    def run(model, conds, x, t, mo):
        seen.update(mo["transformer_options"])
        return [x for _ in conds]

    mechanism.calc_cond_batch(FakeExecutor(run), None, [["c"], ["u"]], torch.zeros(2, 4, 2, 2),
                              torch.full((2,), 5.0), options, attention=attention)
    routed = seen["patches_replace"]["attn2"][("output", 1, 0)]
    assert isinstance(routed, routing.IPRoute) and routed.inner is original
    assert routing.teacher_attn1_patch in seen["patches"]["attn1_patch"]
    assert options["transformer_options"]["patches_replace"]["attn2"][("output", 1, 0)] is original
    assert "patches" not in options["transformer_options"]


def test_extra_branch_and_post_cfg_apply_the_split_scales():  # fact 8
    options = _options({"guidance": {"style_cfg": 9.0, "sigma_start": 1e9, "sigma_end": 0.0}}, 1, teacher=False)
    preds = {"c": torch.full((1, 4), 3.0), "u": torch.full((1, 4), 1.0)}
    ex = FakeExecutor(lambda model, conds, x, t, mo: [preds[c[0]] if c != ["c"] or i < 2 else torch.full((1, 4), 2.0)
                                                      for i, c in enumerate(conds)])
    x = torch.zeros(1, 4)
    c, u = mechanism.calc_cond_batch(ex, None, [["c"], ["u"]], x, torch.full((1,), 5.0), options, attention=attention)
    assert len(ex.calls[0][1]) == 3
    cfg = u + 5.0 * (c - u)
    got = mechanism.post_cfg({"model_options": options, "denoised": cfg, "cond_denoised": c, "cond_scale": 5.0,
                              "input": x})
    torch.testing.assert_close(got, guidance.split_scale_guidance(u, torch.full((1, 4), 2.0), c, 5.0, 9.0))
    # equal scales: no extra branch at all
    options = _options({"guidance": {"style_cfg": 5.0, "sigma_start": 1e9, "sigma_end": 0.0}}, 1, teacher=False)
    ex = FakeExecutor(lambda model, conds, x, t, mo: [x for _ in conds])
    mechanism.calc_cond_batch(ex, None, [["c"], ["u"]], x, torch.full((1,), 5.0), options, attention=attention)
    assert len(ex.calls[0][1]) == 2 and ex.calls[0][4] is options


def test_split_scale_formula_reduces_to_scfg_when_scales_agree():
    g = torch.Generator().manual_seed(0)
    u, m, c = (torch.randn(2, 4, generator=g) for _ in range(3))
    torch.testing.assert_close(guidance.split_scale_guidance(u, m, c, 6.0, 6.0), u + 6.0 * (c - u))
    torch.testing.assert_close(guidance.split_scale_correction(u + 6.0 * (c - u), c, m, 6.0, 2.0),
                               guidance.split_scale_guidance(u, m, c, 6.0, 2.0))
