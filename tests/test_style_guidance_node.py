"""StyleStudio Style Guidance on a host: method.md fact 8 and the split-scale formula, end to end."""
import pytest
import torch

from helpers import assert_close_numerics, adain, guidance, ip, sample, teacher

# Every fact here holds whichever adapter brings the style (IPAdapter_plus or the native one).
pytestmark = pytest.mark.usefixtures("style_source")

ONE_STEP = dict(steps=1, sampler_name="euler")  # one Euler step to sigma 0 returns the x0 prediction itself


@pytest.fixture
def base(host, arch):
    return host.tiny_model(arch)


def _rows_counter(model):
    seen = []

    def count(n, extra_options):
        seen.append(n.shape[0])
        return n

    m = model.clone()
    m.set_model_attn1_output_patch(count)
    return m, seen


def test_equal_scales_are_plain_scfg_at_no_cost(host, arch, base):
    with_ip = ip(host, base, arch, negative_image=True)
    plain, plain_rows = _rows_counter(with_ip)
    guided, guided_rows = _rows_counter(guidance(host, with_ip, style_cfg=5.0))
    assert torch.equal(sample(host, plain, arch, cfg=5.0), sample(host, guided, arch, cfg=5.0))
    assert sum(plain_rows) == sum(guided_rows)


@pytest.mark.parametrize("cfg,style_cfg", [(5.0, 9.0), (5.0, 0.0), (1.0, 3.0), (4.0, 1.5)])
def test_split_scales_follow_the_formula(host, arch, base, cfg, style_cfg):
    with_ip = ip(host, base, arch, negative_image=True)
    pos, neg = host.conditioning(arch, 1), host.conditioning(arch, 101)
    u = sample(host, with_ip, arch, cfg=0.0, positive=pos, negative=neg, **ONE_STEP)   # ε(∅t, s⁻)
    m = sample(host, with_ip, arch, cfg=0.0, positive=pos, negative=pos, **ONE_STEP)   # ε(t, s⁻)
    c = sample(host, with_ip, arch, cfg=1.0, positive=pos, negative=neg, **ONE_STEP)   # ε(t, s⁺)
    expected = u + cfg * (m - u) + style_cfg * (c - m)
    got = sample(host, guidance(host, with_ip, style_cfg=style_cfg), arch, cfg=cfg, positive=pos, negative=neg,
                 **ONE_STEP)
    assert_close_numerics(got, expected)


def test_cfg1_style1_is_the_plain_conditional_prediction(host, arch, base):
    with_ip = ip(host, base, arch, negative_image=True)
    assert torch.equal(sample(host, guidance(host, with_ip, style_cfg=1.0), arch, cfg=1.0),
                       sample(host, with_ip, arch, cfg=1.0))


def test_one_extra_branch_per_step(host, arch, base):
    with_ip = ip(host, base, arch, negative_image=True)
    plain, plain_rows = _rows_counter(with_ip)
    guided, guided_rows = _rows_counter(guidance(host, with_ip, style_cfg=8.0))
    sample(host, plain, arch, cfg=5.0, batch=2)
    sample(host, guided, arch, cfg=5.0, batch=2)
    assert sum(guided_rows) == sum(plain_rows) * 3 // 2


@pytest.mark.parametrize("cfg", [1.0, 5.0])
def test_split_chunks_give_the_same_result_and_no_index_error(host, arch, base, cfg):
    model = guidance(host, adain(host, ip(host, base, arch, negative_image=True)), style_cfg=8.0)
    batched = sample(host, model, arch, batch=2, cfg=cfg)
    with host.force_split():
        split = sample(host, model, arch, batch=2, cfg=cfg)
    assert_close_numerics(split, batched)


def test_composes_with_teacher_and_adain(host, arch, base):
    model = guidance(host, teacher(host, adain(host, ip(host, base, arch, negative_image=True)), return_teacher=True),
                     style_cfg=8.0)
    out = sample(host, model, arch, batch=2)
    assert_close_numerics(out[2:], sample(host, base, arch, batch=2))
    other_order = ip(host, adain(host, teacher(host, guidance(host, base, style_cfg=8.0), return_teacher=True)),
                     arch, negative_image=True)
    assert torch.equal(out, sample(host, other_order, arch, batch=2))


def test_second_node_replaces_and_window_off_is_identical(host, arch, base):
    with_ip = ip(host, base, arch, negative_image=True)
    assert torch.equal(sample(host, guidance(host, guidance(host, with_ip, style_cfg=9.0), style_cfg=5.0), arch),
                       sample(host, with_ip, arch))
    assert torch.equal(sample(host, guidance(host, with_ip, style_cfg=9.0, start_at=0.2, end_at=0.2), arch),
                       sample(host, with_ip, arch))


def test_no_ip_adapter_is_a_clear_error(host, arch, base):
    with pytest.raises(Exception, match=r"StyleStudio Style Guidance.*IPAdapter"):
        sample(host, guidance(host, base, style_cfg=8.0), arch)


def test_bad_inputs_name_the_node(host, base):
    with pytest.raises(Exception, match="StyleStudio Style Guidance.*style_cfg"):
        guidance(host, base, style_cfg=-1.0)
    with pytest.raises(Exception, match="StyleStudio Style Guidance.*not a UNet"):
        guidance(host, host.non_unet_model())
