"""method.md checkable facts 1-3 on the AdaIN maths itself (plain torch)."""
import torch

from stylestudio_core_import import core

adain = core.adain.cross_modal_adain


def _pair(seed=0, b=2, n=64, c=40):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, c, generator=g) * 3 + 1, torch.randn(b, n, c, generator=g) * 0.5 - 2


def test_fused_statistics_equal_ip_statistics():  # fact 1
    t, s = _pair()
    out = adain(t, s)
    torch.testing.assert_close(out.mean(1), s.mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.std(1), s.std(1), atol=1e-5, rtol=1e-5)
    # it replaces the sum: nothing of the sum's mean survives
    assert not torch.allclose(out.mean(1), (t + s).mean(1), atol=1e-2)


def test_statistics_are_per_row_and_channel_not_per_head():
    t, s = _pair()
    s[1] = s[1] * 10  # row 1 gets very different statistics
    s[..., :8] += 100  # so do the first channels (one "head" worth)
    out = adain(t, s)
    torch.testing.assert_close(out.mean(1), s.mean(1), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out.std(1), s.std(1), atol=1e-4, rtol=1e-5)


def test_invariant_to_affine_change_of_text():  # fact 2
    t, s = _pair(1)
    k = torch.rand(1, 1, t.shape[-1]) * 5 + 0.1
    c = torch.randn(1, 1, t.shape[-1]) * 7
    torch.testing.assert_close(adain(k * t + c, s), adain(t, s), atol=1e-4, rtol=1e-4)


def test_zero_ip_returns_text_exactly():  # fact 3
    t, _ = _pair(2)
    assert torch.equal(adain(t, torch.zeros_like(t)), t)


def test_row_without_ip_keeps_text_other_row_fused():
    t, s = _pair(3)
    s[0] = 0
    out = adain(t, s)
    assert torch.equal(out[0], t[0])
    torch.testing.assert_close(out[1].mean(0), s[1].mean(0), atol=1e-5, rtol=1e-5)


def test_masked_tokens_keep_text_and_statistics_come_from_mask():
    t, s = _pair(4)
    inside = torch.zeros(1, t.shape[1], 1, dtype=torch.bool)
    inside[:, :20] = True
    s = s * inside
    out = adain(t, s)
    assert torch.equal(out[:, 20:], t[:, 20:])
    torch.testing.assert_close(out[:, :20].mean(1), s[:, :20].mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, :20].std(1), s[:, :20].std(1), atol=1e-5, rtol=1e-5)


def test_constant_text_channel_gives_no_nan():
    t, s = _pair(5)
    t[..., 3] = 4.0
    out = adain(t, s)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[..., 3], s[..., 3].mean(1, keepdim=True).expand_as(out[..., 3]))


def test_strength_blends_linearly_and_zero_is_plain_sum():
    t, s = _pair(6)
    full, plain = adain(t, s, 1.0), t + s
    torch.testing.assert_close(adain(t, s, 0.0), plain)
    torch.testing.assert_close(adain(t, s, 0.25), 0.75 * plain + 0.25 * full, atol=1e-5, rtol=1e-5)


def test_half_precision_input_uses_fp32_statistics():
    t, s = _pair(7)
    out = adain(t.half(), s.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float().mean(1), s.half().float().mean(1), atol=2e-2, rtol=1e-2)


# ----------------------------------------------------------------------------------- the hot-path form
def _reference_adain(text_out, ip_out, strength=1.0):
    """The textbook form the pack shipped first (two masked passes per statistic, a second full blend): the
    reference the fused implementation must reproduce to 1e-6 relative."""
    def stats(x, weight, count):
        mean = (x * weight).sum(dim=1, keepdim=True) / count
        var = ((x - mean).square() * weight).sum(dim=1, keepdim=True) / count
        return mean, var.sqrt()

    t, s = text_out.float(), ip_out.float()
    support = (s != 0).any(dim=-1, keepdim=True)
    weight = support.to(t.dtype)
    count = weight.sum(dim=1, keepdim=True).clamp(min=1.0)
    mu_t, sigma_t = stats(t, weight, count)
    mu_s, sigma_s = stats(s, weight, count)
    normalised = torch.where(sigma_t > 0, (t - mu_t) / sigma_t.clamp(min=torch.finfo(t.dtype).tiny), 0.0)
    fused = normalised * sigma_s + mu_s
    plain = t + s
    if strength != 1.0:
        fused = torch.lerp(plain, fused, float(strength))
    return torch.where(support, fused, plain).to(text_out.dtype)


def _cases():
    g = torch.Generator().manual_seed(11)
    for _ in range(3):
        # per-channel offsets 10x the spread: the conditioning a one-pass E[x²] − E[x]² would lose
        t = torch.randn(2, 256, 40, generator=g) * 3 + 1 + torch.randn(1, 1, 40, generator=g) * 10
        s = torch.randn(2, 256, 40, generator=g) * 0.5 - 2
        mask = torch.zeros(2, 256, 1)
        mask[0, :100] = 1
        mask[1, 50:] = 1
        quiet = s.clone()
        quiet[1] = 0  # a row without IP contribution
        yield t, s
        yield t, s * mask
        yield t, quiet


def test_fused_form_matches_the_reference_to_1e6():
    for t, s in _cases():
        for strength in (1.0, 0.5, 0.0):
            out, ref = adain(t, s, strength), _reference_adain(t, s, strength)
            assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-6, strength
    t, s = next(_cases())
    half, ref = adain(t.half(), s.half()), _reference_adain(t.half(), s.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), ref.float(), atol=2e-3 * float(ref.abs().max()), rtol=0)


_VIEWS = {"aten::slice", "aten::select", "aten::view", "aten::reshape", "aten::expand", "aten::as_strided",
          "aten::unsqueeze", "aten::squeeze", "aten::transpose", "aten::permute", "aten::t", "aten::alias",
          "aten::detach", "aten::_reshape_alias", "aten::resolve_conj", "aten::resolve_neg", "aten::result_type",
          "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::lift_fresh"}


def full_size_ops(fn, *args):
    """The aten ops `fn` itself calls (top level, not their internals) that read a full (B, N, C) tensor, as the
    torch profiler records them; views and dtype no-ops are free and not counted."""
    from torch.profiler import ProfilerActivity, profile
    full = list(args[0].shape)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn(*args)
    ops = []
    for e in prof.events():
        if not e.name.startswith("aten::") or e.name in _VIEWS:
            continue
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is not None:
            continue
        if e.name == "aten::to" and not any(c.name == "aten::_to_copy" for c in e.cpu_children):
            continue  # .to() to the dtype it already has
        if any(list(shape) == full for shape in e.input_shapes if shape):
            ops.append(e.name)
    return ops


def test_hot_path_op_budget():
    """Counted with the profiler so the hot path cannot creep back: ≤ 12 full-size ops per call (the textbook form
    takes 21 in fp32 at strength 1, 22 below 1, 24 in fp16)."""
    t, s = next(_cases())
    assert len(full_size_ops(_reference_adain, t, s)) == 21  # the counter sees what it should
    assert len(full_size_ops(_reference_adain, t.half(), s.half())) == 24
    budget = {(torch.float32, 1.0): 9, (torch.float32, 0.5): 10, (torch.float16, 1.0): 10, (torch.float16, 0.5): 11}
    for (dtype, strength), most in budget.items():
        ops = full_size_ops(adain, t.to(dtype), s.to(dtype), strength)
        assert len(ops) <= min(most, 12), (dtype, strength, ops)
