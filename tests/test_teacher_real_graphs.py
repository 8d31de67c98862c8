"""StyleStudio Teacher Layout on graphs users build (issue 11): per-image inputs whose batch is not the latent's,
split schedules (KSamplerAdvanced, base -> refiner), schedules that never reach the window, graphs that re-batch
the latent, and the per-step noise of samplers the pack does not know by name.

The teacher's defining fact (method.md fact 5): its rows are a plain run of the same graph without the
IP-Adapter, from the same noise. Every test here checks that fact (or the students' one-pass result) under the
extra machinery, or that the pack says what it does instead.
"""
import logging

import pytest
import torch

from helpers import adain, assert_close_numerics, ip, sample, teacher
from test_interop import apply_controlnet, hint_image, real_host_only, regional_positive


@pytest.fixture
def base(host, arch):
    return host.tiny_model(arch)


def rel_err(actual, expected):
    return float((actual.double() - expected.double()).norm() / expected.double().norm().clamp_min(1e-12))


def stylised_with_teacher(host, model, arch, **kw):
    return teacher(host, adain(host, ip(host, model, arch)), **kw)


def batched_conditioning(host, arch, seeds):
    """One CONDITIONING entry whose tensors hold one prompt per image (batch len(seeds)), as a batched text
    encode or a 'Conditioning (Concat/Combine)' of per-image prompts gives."""
    parts = [host.conditioning(arch, s) for s in seeds]
    cond = torch.cat([p[0][0] for p in parts])
    extra = {k: torch.cat([p[0][1][k] for p in parts]) for k in parts[0][0][1]}
    return [[cond, extra]]


def teacher_logs(caplog):
    return [r.getMessage() for r in caplog.records if "StyleStudio Teacher Layout" in r.getMessage()]


# ---------------------------------------------------------------------------------------------------------
# 1. Per-image inputs whose batch differs from the latent's: teacher row i gets what student row i gets
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 3])
def test_per_image_prompts_reach_each_teacher_row_as_its_student(host, arch, base, batch):
    pos, neg = batched_conditioning(host, arch, [1, 2]), host.conditioning(arch, 101)
    out = sample(host, stylised_with_teacher(host, base, arch, return_teacher=True), arch, batch=batch,
                 positive=pos, negative=neg)
    plain = sample(host, base, arch, batch=batch, positive=pos, negative=neg)
    assert out.shape[0] == 2 * batch
    assert_close_numerics(out[batch:], plain)
    if batch == 3:  # the per-image prompts take part: image 1 has prompt 2, unlike a run with prompt 1 only
        alone = sample(host, base, arch, batch=batch, positive=host.conditioning(arch, 1), negative=neg)
        assert_close_numerics(plain[[0, 2]], alone[[0, 2]])
        assert not torch.allclose(plain[1], alone[1], atol=1e-3)
    dropped = sample(host, stylised_with_teacher(host, base, arch), arch, batch=batch, positive=pos, negative=neg)
    assert_close_numerics(dropped, out[:batch])


def test_per_image_mask_conds_reach_each_teacher_row_as_its_student(host, arch, base):
    pos, neg = regional_positive(host, arch, mask_batch=2), host.conditioning(arch, 101)
    out = sample(host, stylised_with_teacher(host, base, arch, return_teacher=True), arch, positive=pos, negative=neg)
    plain = sample(host, base, arch, positive=pos, negative=neg)
    assert_close_numerics(out[1:], plain)
    # the mask cond takes part (mask 1 differs from mask 0, so handing it to the teacher would show)
    other = regional_positive(host, arch, mask_batch=2)
    other[2][1]["mask"] = other[2][1]["mask"].flip(0)
    assert not torch.allclose(sample(host, base, arch, positive=other, negative=neg), plain, atol=1e-3)


@pytest.mark.parametrize("batch", [1, 3])
def test_per_image_noise_masks_reach_each_teacher_row_as_its_student(host, arch, base, batch):
    start = {"samples": torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    mask = torch.zeros(2, 8, 8)
    mask[0, :, 4:] = 1
    mask[1, 4:, :] = 1
    model = stylised_with_teacher(host, base, arch, return_teacher=True)
    out = sample(host, model, arch, latent=dict(start), noise_mask=mask)
    plain = sample(host, base, arch, latent=dict(start), noise_mask=mask)
    assert_close_numerics(out[batch:], plain)
    assert_close_numerics(out[:batch, :, :, :4][0], start["samples"][0, :, :, :4])  # mask 0 keeps the left half


@pytest.mark.parametrize("hint_batch", [2])
def test_per_image_controlnet_hints_reach_each_teacher_row_as_its_student(host, arch, base, hint_batch):
    real_host_only(host, "ControlNet")
    pos0, neg0 = host.conditioning(arch, 1), host.conditioning(arch, 101)
    pos, neg = apply_controlnet(host, arch, pos0, neg0, hint_image(hint_batch))
    model = stylised_with_teacher(host, base, arch, return_teacher=True)
    out = sample(host, model, arch, positive=pos, negative=neg)
    plain = sample(host, base, arch, positive=pos, negative=neg)
    assert_close_numerics(out[1:], plain)
    with host.force_split():  # one chunk per forward: ComfyUI fits the hints to each chunk instead
        split = sample(host, model, arch, positive=pos, negative=neg)
        assert_close_numerics(split[1:], sample(host, base, arch, positive=pos, negative=neg))
    dropped = sample(host, stylised_with_teacher(host, base, arch), arch, positive=pos, negative=neg)
    assert_close_numerics(dropped, out[:1])


def tiny_t2i_adapter(host):
    """A comfy.controlnet.T2IAdapter around a comfy.t2i_adapter Adapter sized for the tiny SD1.5 UNet (widths
    32/64/128/128, what comfy.controlnet.load_t2i_adapter builds for such a model), weights from a fixed seed."""
    import comfy.controlnet
    import comfy.t2i_adapter.adapter
    from hosts import _tiny_weights as tw
    adapter = comfy.t2i_adapter.adapter.Adapter(cin=3 * 64, channels=[32, 64, 128, 128], nums_rb=1, ksize=1,
                                                sk=True, use_conv=False, xl=False)
    tw.init_weights_(adapter, seed=556)
    return comfy.controlnet.T2IAdapter(adapter, 3, 8, "nearest-exact", device=torch.device("cpu"))


def test_per_image_t2i_adapter_hints_reach_each_teacher_row_as_its_student(host):
    real_host_only(host, "T2I-Adapter")
    import nodes
    arch = "sd15"
    base = host.tiny_model(arch)
    pos0, neg0 = host.conditioning(arch, 1), host.conditioning(arch, 101)
    with torch.inference_mode():
        pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos0, neg0, tiny_t2i_adapter(host),
                                                                    hint_image(2), 0.8, 0.0, 1.0)
    plain = sample(host, base, arch, positive=pos, negative=neg)
    assert not torch.allclose(plain, sample(host, base, arch, positive=pos0, negative=neg0), atol=1e-3)
    out = sample(host, stylised_with_teacher(host, base, arch, return_teacher=True), arch, positive=pos, negative=neg)
    assert_close_numerics(out[1:], plain)
    dropped = sample(host, stylised_with_teacher(host, base, arch), arch, positive=pos, negative=neg)
    assert_close_numerics(dropped, out[:1])


# ---------------------------------------------------------------------------------------------------------
# 2. Split schedules: KSamplerAdvanced 0..k then k..N, base -> refiner
# ---------------------------------------------------------------------------------------------------------
STEPS, SPLIT = 8, 4


def two_passes(host, first, second, arch, *, batch=1, split=SPLIT, steps=STEPS, seed=0):
    pos, neg = host.conditioning(arch, 1), host.conditioning(arch, 101)
    latent = host.empty_latent(arch, batch=batch)
    mid = host.ksampler_advanced(first, pos, neg, latent, seed=seed, steps=steps, start_at_step=0, end_at_step=split,
                                 return_with_leftover_noise=True)
    out = host.ksampler_advanced(second, pos, neg, mid, add_noise=False, seed=seed, steps=steps, start_at_step=split,
                                 end_at_step=steps)
    return mid["samples"].clone(), out["samples"].clone()


def one_pass(host, model, arch, *, batch=1, steps=STEPS, seed=0):
    pos, neg = host.conditioning(arch, 1), host.conditioning(arch, 101)
    return host.ksampler_advanced(model, pos, neg, host.empty_latent(arch, batch=batch), seed=seed, steps=steps,
                                  start_at_step=0, end_at_step=steps)["samples"].clone()


@pytest.mark.parametrize("end_at", [0.25, 0.75])  # the window ends in the first pass / spans the split
def test_a_split_schedule_equals_one_pass(host, arch, base, end_at, caplog):
    model = stylised_with_teacher(host, base, arch, end_at=end_at)
    whole = one_pass(host, model, arch, batch=2)
    with caplog.at_level(logging.WARNING):
        mid, split = two_passes(host, model, model, arch, batch=2)
    assert mid.shape[0] == split.shape[0] == 2
    assert rel_err(split, whole) <= 1e-4, rel_err(split, whole)
    assert not teacher_logs(caplog)  # a split the pack carries over needs no warning
    # with return_teacher on both passes the teacher rows are the plain split run
    keep = stylised_with_teacher(host, base, arch, end_at=end_at, return_teacher=True)
    _, kept = two_passes(host, keep, keep, arch, batch=2)
    assert kept.shape[0] == 4
    assert rel_err(kept[:2], whole) <= 1e-4
    assert rel_err(kept[2:], two_passes(host, base, base, arch, batch=2)[1]) <= 1e-4


def test_return_teacher_rows_of_a_first_pass_are_never_students(host, arch, base):
    first = stylised_with_teacher(host, base, arch, end_at=0.75, return_teacher=True)
    whole = one_pass(host, stylised_with_teacher(host, base, arch, end_at=0.75), arch)
    mid, out = two_passes(host, first, stylised_with_teacher(host, base, arch, end_at=0.75), arch)
    assert mid.shape[0] == 2 and out.shape[0] == 1
    assert rel_err(out, whole) <= 1e-4
    # a second model with StyleStudio but no Teacher Layout: the teacher rows stay an un-stylised teacher
    _, carried = two_passes(host, first, adain(host, ip(host, base, arch)), arch)
    assert carried.shape[0] == 2
    assert rel_err(carried[1:], two_passes(host, base, base, arch)[1]) <= 1e-4


def test_base_to_refiner_carries_the_teacher(host, arch, base):
    """SDXL's base -> refiner pattern: two models, the second continuing the first's latent with its own
    IP-Adapter; the teacher is the same graph without IP-Adapters on both."""
    first = stylised_with_teacher(host, base, arch, end_at=0.9, return_teacher=True)
    refiner = teacher(host, ip(host, host.tiny_model(arch), arch, seed=9, weight=0.5), end_at=0.9, return_teacher=True)
    _, out = two_passes(host, first, refiner, arch, split=6)
    assert out.shape[0] == 2
    plain = two_passes(host, base, host.tiny_model(arch), arch, split=6)[1]
    assert rel_err(out[1:], plain) <= 1e-4
    assert rel_err(out[:1], plain) > 1e-2  # the students are stylised


def test_a_continuation_without_a_handed_over_teacher_says_so(host, arch, base, caplog):
    with caplog.at_level(logging.WARNING):
        two_passes(host, ip(host, base, arch), teacher(host, ip(host, base, arch), end_at=0.75), arch)
    assert any("adds no noise" in m for m in teacher_logs(caplog))


def test_a_teacher_dropped_in_the_first_pass_cannot_be_returned_by_the_second_and_says_so(host, arch, base, caplog):
    first = stylised_with_teacher(host, base, arch, end_at=0.25)
    with caplog.at_level(logging.WARNING):
        _, out = two_passes(host, first, stylised_with_teacher(host, base, arch, end_at=0.25, return_teacher=True),
                            arch)
    assert out.shape[0] == 2
    assert any("dropped its teacher" in m for m in teacher_logs(caplog))


# ---------------------------------------------------------------------------------------------------------
# 4. No silent fall-backs
# ---------------------------------------------------------------------------------------------------------
def test_img2img_that_starts_after_the_window_skips_the_teacher_and_says_so(host, arch, base, caplog):
    start = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    with_ip = adain(host, ip(host, base, arch))
    with caplog.at_level(logging.WARNING):
        out = sample(host, teacher(host, with_ip, end_at=0.4), arch, latent=dict(start), denoise=0.5)
    logs = teacher_logs(caplog)
    assert len(logs) == 1 and "end_at" in logs[0] and "denoise" in logs[0]
    assert torch.equal(out, sample(host, with_ip, arch, latent=dict(start), denoise=0.5))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        coupled = sample(host, teacher(host, with_ip, end_at=0.7), arch, latent=dict(start), denoise=0.5)
    assert not teacher_logs(caplog)
    assert not torch.allclose(coupled, out, atol=1e-4)


def test_a_node_that_rebatches_the_latent_is_an_error(host, arch, base):
    import comfy.samplers

    def first_rows_only(args):  # a graph node evaluating the model on fewer rows than the sampler holds
        x, t = args["input"], args["sigma"]
        out = comfy.samplers.calc_cond_batch(args["model"], args["conds"], x[:1], t[:1], args["model_options"])
        return [o.repeat(x.shape[0], 1, 1, 1) for o in out]

    model = stylised_with_teacher(host, base, arch, return_teacher=True)
    model.model_options["sampler_calc_cond_batch_function"] = first_rows_only
    with pytest.raises(Exception, match="StyleStudio Teacher Layout.*rows"):
        sample(host, model, arch)


def test_context_windows_are_an_error_naming_both_nodes(host, arch, base):
    real_host_only(host, "Context Windows (Manual) node")
    import nodes
    cls = nodes.NODE_CLASS_MAPPINGS["ContextWindowsManual"]
    model = stylised_with_teacher(host, base, arch)
    with torch.inference_mode():
        windowed = cls.execute(model, 1, 0, "standard_static", 1, False, "pyramid", 0)[0]
    with pytest.raises(Exception, match="StyleStudio Teacher Layout.*[Cc]ontext [Ww]indows"):
        sample(host, windowed, arch, batch=2)


# ---------------------------------------------------------------------------------------------------------
# 6. Per-step noise: derived from what the sampler does, not from its name
# ---------------------------------------------------------------------------------------------------------
def sample_with(host, model, arch, function, *, batch=2, steps=5, seed=0):
    """A sampler built from a sampler function (KSAMPLER, as a custom-sampler pack registers one), through
    comfy.sample.sample_custom."""
    import comfy.sample
    import comfy.samplers
    latent = host.empty_latent(arch, batch=batch)["samples"]
    noise = comfy.sample.prepare_noise(latent, seed)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
    with torch.inference_mode():
        out = comfy.sample.sample_custom(model, noise, 5.0, comfy.samplers.KSAMPLER(function), sigmas,
                                         host.conditioning(arch, 1), host.conditioning(arch, 101), latent, seed=seed)
    return out.clone()


def sample_gaussian_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """A third-party sampler named *sde* that draws seeded Gaussian noise (ancestral Euler underneath)."""
    import comfy.k_diffusion.sampling as kds
    return kds.sample_euler_ancestral(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                                      noise_sampler=noise_sampler)


def sample_my_solver(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """A third-party sampler not named sde that draws Brownian-tree noise (DPM++ 2M SDE underneath)."""
    import comfy.k_diffusion.sampling as kds
    return kds.sample_dpmpp_2m_sde(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                                   noise_sampler=noise_sampler)


def sample_own_noise(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """A sampler that takes a noise_sampler but builds its default its own way."""
    import comfy.k_diffusion.sampling as kds
    seed = (extra_args or {}).get("seed", 0)
    gen = torch.Generator().manual_seed(seed + 12345)
    own = noise_sampler or (lambda s, sn: torch.randn(x.shape, generator=gen).to(x))
    return kds.sample_euler_ancestral(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                                      noise_sampler=own)


@pytest.mark.parametrize("function", [sample_gaussian_sde, sample_my_solver], ids=lambda f: f.__name__)
def test_custom_samplers_tie_the_noise_they_really_draw(host, arch, base, function, caplog):
    with_ip = ip(host, base, arch)
    with caplog.at_level(logging.WARNING):
        kept = sample_with(host, teacher(host, with_ip, end_at=0.5, return_teacher=True), arch, function)
    plain = sample_with(host, base, arch, function)
    assert_close_numerics(kept[2:], plain)
    assert_close_numerics(sample_with(host, teacher(host, with_ip, end_at=0.5), arch, function), kept[:2])
    assert not teacher_logs(caplog)
    # the noise is drawn (else the check above says nothing): a stochastic run differs from another seed
    assert not torch.allclose(plain, sample_with(host, base, arch, function, seed=1), atol=1e-3)


def test_a_sampler_whose_noise_cannot_be_told_warns(host, arch, base, caplog):
    model = teacher(host, ip(host, base, arch), end_at=0.5, return_teacher=True)
    with caplog.at_level(logging.WARNING):
        out = sample_with(host, model, arch, sample_own_noise, steps=3)
    assert out.shape[0] == 4 and torch.isfinite(out).all()
    assert any("cannot tell" in m and "sample_own_noise" in m for m in teacher_logs(caplog))


@pytest.mark.parametrize("sampler_name", ["dpmpp_2m_sde", "dpmpp_2m_sde_gpu"])
def test_brownian_noise_of_the_teacher_is_the_plain_runs(host, arch, base, sampler_name):
    """The dpmpp SDE samplers draw Brownian-tree noise from the run's seed; the teacher must draw exactly what a
    plain run draws (a wrong seed, sigma range or noise kind in the pack's tie shows here, on both tiers)."""
    assert sampler_name in host.sampler_names()
    with_ip = ip(host, base, arch)
    kept = sample(host, teacher(host, with_ip, end_at=0.5, return_teacher=True), arch, batch=2,
                  sampler_name=sampler_name, steps=5)
    plain = sample(host, base, arch, batch=2, sampler_name=sampler_name, steps=5)
    assert_close_numerics(kept[2:], plain)
    dropped = sample(host, teacher(host, with_ip, end_at=0.5), arch, batch=2, sampler_name=sampler_name, steps=5)
    assert_close_numerics(dropped, kept[:2])
    assert not torch.allclose(plain, sample(host, base, arch, batch=2, sampler_name=sampler_name, steps=5, seed=1),
                              atol=1e-3)


def test_brownian_noise_is_a_function_of_seed_and_sigmas(host):
    """What the tie relies on, on both tiers: Brownian-tree noise between two sigmas depends on the seed and the
    tree's sigma range, not on what was drawn before (unlike the seeded Gaussian)."""
    import comfy.k_diffusion.sampling as kds
    x = torch.zeros(2, 4, 8, 8)

    def tree(seed, sigma_min=0.03):
        return kds.BrownianTreeNoiseSampler(x, torch.tensor(sigma_min), torch.tensor(14.6), seed=seed, cpu=True)

    a, b = tree(0), tree(0)
    b(torch.tensor(9.0), torch.tensor(7.0))  # an extra draw first
    first = a(torch.tensor(5.0), torch.tensor(3.0))
    assert first.shape == x.shape
    torch.testing.assert_close(b(torch.tensor(5.0), torch.tensor(3.0)), first)
    assert not torch.allclose(tree(1)(torch.tensor(5.0), torch.tensor(3.0)), first, atol=1e-3)
