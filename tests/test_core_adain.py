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
