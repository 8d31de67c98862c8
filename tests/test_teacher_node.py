"""StyleStudio Teacher Layout on a host: method.md facts 5-7 and 9, window handling, composition, errors."""
import pytest
import torch

from helpers import assert_close_numerics, adain, ip, sample, snapshot_options, teacher

# Every fact here holds whichever adapter brings the style (IPAdapter_plus or the native one).
pytestmark = pytest.mark.usefixtures("style_source")



@pytest.fixture
def base(host, arch):
    return host.tiny_model(arch)


def test_output_keeps_the_user_batch_size(host, arch, base):
    out = sample(host, teacher(host, ip(host, base, arch)), arch, batch=2)
    assert out.shape[0] == 2 and torch.isfinite(out).all()


def test_teacher_changes_the_student(host, arch, base):
    with_ip = ip(host, base, arch)
    assert not torch.allclose(sample(host, teacher(host, with_ip), arch), sample(host, with_ip, arch), atol=1e-4)


@pytest.mark.parametrize("batch", [1, 2])
def test_teacher_equals_a_plain_run_without_ip_adapter(host, arch, base, batch):  # fact 5
    out = sample(host, teacher(host, adain(host, ip(host, base, arch)), return_teacher=True), arch, batch=batch)
    assert out.shape[0] == 2 * batch
    assert_close_numerics(out[batch:], sample(host, base, arch, batch=batch))
    # and nothing of the student reaches it: a different style leaves the teacher as it is
    other = sample(host, teacher(host, ip(host, base, arch, seed=9, weight=2.0), return_teacher=True), arch, batch=batch)
    assert_close_numerics(other[batch:], out[batch:])


def test_dropping_the_teacher_after_the_window_changes_nothing(host, arch, base):  # fact 7
    with_ip = ip(host, base, arch)
    kept = sample(host, teacher(host, with_ip, end_at=0.5, return_teacher=True), arch, steps=6)
    dropped = sample(host, teacher(host, with_ip, end_at=0.5), arch, steps=6)
    assert_close_numerics(dropped, kept[:1])


def _noisy_samplers(host):
    return [s for s in ("euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_2m_sde", "dpmpp_sde") if s in host.sampler_names()]


def test_per_step_noise_is_tied_between_teacher_and_student(host, arch, base):
    """Ancestral/SDE samplers: the teacher gets the students' per-step noise, which is the noise a run without
    the teacher draws, so facts 5 and 7 hold for them too."""
    with_ip = ip(host, base, arch)
    for name in _noisy_samplers(host):
        kept = sample(host, teacher(host, with_ip, end_at=0.5, return_teacher=True), arch, batch=2,
                      sampler_name=name, steps=5)
        assert_close_numerics(kept[2:], sample(host, base, arch, batch=2, sampler_name=name, steps=5))
        dropped = sample(host, teacher(host, with_ip, end_at=0.5), arch, batch=2, sampler_name=name, steps=5)
        assert_close_numerics(dropped, kept[:2])


def test_empty_window_is_bit_identical(host, arch, base):  # fact 4
    with_ip = ip(host, base, arch)
    assert torch.equal(sample(host, teacher(host, with_ip, start_at=0.3, end_at=0.3), arch), sample(host, with_ip, arch))


def test_identical_runs_are_identical(host, arch, base):  # fact 9
    model = teacher(host, adain(host, ip(host, base, arch)))
    assert torch.equal(sample(host, model, arch, batch=2), sample(host, model, arch, batch=2))


def _spy_attn1(host, model, arch, records):
    """Another node's attn1 replace on the first self-attention block: records q, k, v per call. StyleStudio
    must chain with it, never overwrite it."""
    from comfy.ldm.modules.attention import optimized_attention

    def spy(q, k, v, extra_options):
        records.append((float(extra_options["sigmas"][0]), list(extra_options["cond_or_uncond"]), q, k, v))
        return optimized_attention(q, k, v, extra_options["n_heads"])

    m = model.clone()
    m.set_model_attn1_replace(spy, "input", 4 if arch == "sdxl" else 1)
    return m


def test_inside_the_window_students_attend_with_teacher_queries_and_keys(host, arch, base):  # fact 6
    records = []
    model = _spy_attn1(host, teacher(host, ip(host, base, arch), end_at=0.6, return_teacher=True), arch, records)
    sample(host, model, arch, steps=6)
    sigma_end = host.percent_to_sigma(model, 0.6)
    inside = [r for r in records if r[0] >= sigma_end]
    outside = [r for r in records if r[0] < sigma_end]
    assert inside and outside
    values_differ = False
    for sigma, chunks, q, k, v in records:
        per = q.shape[0] // len(chunks)
        s = torch.cat([torch.arange(c * per, c * per + per // 2) for c in range(len(chunks))])
        t = s + per // 2
        if sigma >= sigma_end:
            assert torch.equal(q[s], q[t]) and torch.equal(k[s], k[t])
            values_differ |= not torch.equal(v[s], v[t])
        else:
            assert not torch.equal(q[s], q[t])
    assert values_differ, "student values never differed from the teacher's inside the window"


def test_after_the_window_the_teacher_is_not_computed(host, arch, base):
    records = []
    model = _spy_attn1(host, teacher(host, ip(host, base, arch), end_at=0.5), arch, records)
    sample(host, model, arch, steps=6, batch=2)
    sigma_end = host.percent_to_sigma(model, 0.5)
    for sigma, chunks, q, k, v in records:
        assert q.shape[0] == len(chunks) * (4 if sigma >= sigma_end else 2)


@pytest.mark.parametrize("cfg", [1.0, 5.0])
def test_split_chunks_and_cfg1(host, arch, base, cfg):
    model = teacher(host, adain(host, ip(host, base, arch)), return_teacher=True)
    batched = sample(host, model, arch, batch=2, cfg=cfg)
    with host.force_split():
        split = sample(host, model, arch, batch=2, cfg=cfg)
    assert_close_numerics(split, batched)
    assert_close_numerics(batched[2:], sample(host, base, arch, batch=2, cfg=cfg))


def test_composes_with_adain_in_any_order(host, arch, base):
    a = teacher(host, adain(host, ip(host, base, arch)))
    b = ip(host, adain(host, teacher(host, base)), arch)
    assert torch.equal(sample(host, a, arch), sample(host, b, arch))


def test_img2img_inpainting_and_ancestral(host, arch, base):
    model = teacher(host, adain(host, ip(host, base, arch)), return_teacher=True)
    start = {"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    out = sample(host, model, arch, latent=start, denoise=0.6)
    assert_close_numerics(out[2:], sample(host, base, arch, latent=start, denoise=0.6))
    mask = torch.zeros(1, 8, 8)
    mask[:, :, 4:] = 1
    inpaint = sample(host, model, arch, latent=dict(start), noise_mask=mask)
    assert inpaint.shape[0] == 4 and torch.isfinite(inpaint).all()
    assert_close_numerics(inpaint[:2, :, :, :4], start["samples"][:, :, :, :4])
    assert torch.isfinite(sample(host, model, arch, sampler_name="euler_ancestral")).all()


def test_input_model_is_never_mutated(host, arch, base):
    with_ip = ip(host, base, arch)
    before = snapshot_options(with_ip)
    sample(host, teacher(host, with_ip), arch)
    assert snapshot_options(with_ip) == before


def test_bad_inputs_name_the_node(host, base):
    with pytest.raises(Exception, match="StyleStudio Teacher Layout.*end_at"):
        teacher(host, base, start_at=0.5, end_at=0.2)
    with pytest.raises(Exception, match="StyleStudio Teacher Layout.*not a UNet"):
        teacher(host, host.non_unet_model())
