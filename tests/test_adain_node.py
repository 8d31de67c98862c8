"""StyleStudio Cross-Modal AdaIN on a host (stand-in or real ComfyUI): method.md facts 3-4 end to end, wiring
order, stacking, batching and errors."""
import pytest
import torch

from helpers import assert_close_numerics, adain, ip, sample, snapshot_options

# Every fact here holds whichever adapter brings the style (IPAdapter_plus or the native one).
pytestmark = pytest.mark.usefixtures("style_source")


@pytest.fixture
def base(host, arch):
    return host.tiny_model(arch)


def test_adain_changes_the_stylised_output(host, arch, base):
    with_ip = ip(host, base, arch)
    plain, fused = sample(host, with_ip, arch), sample(host, adain(host, with_ip), arch)
    assert torch.isfinite(fused).all()
    assert not torch.allclose(plain, fused, atol=1e-4)


@pytest.mark.parametrize("off", [dict(strength=0.0), dict(start_at=0.5, end_at=0.5)])
def test_effect_off_is_bit_identical(host, arch, base, off):  # fact 4
    with_ip = ip(host, base, arch)
    assert torch.equal(sample(host, with_ip, arch), sample(host, adain(host, with_ip, **off), arch))


def test_wiring_order_does_not_matter(host, arch, base):
    a = sample(host, adain(host, ip(host, base, arch)), arch)
    b = sample(host, ip(host, adain(host, base), arch), arch)
    assert torch.equal(a, b)


def test_second_node_replaces_the_first(host, arch, base):
    with_ip = ip(host, base, arch)
    assert torch.equal(sample(host, adain(host, adain(host, with_ip), strength=0.0), arch), sample(host, with_ip, arch))
    assert torch.equal(sample(host, adain(host, adain(host, with_ip, strength=0.3)), arch),
                       sample(host, adain(host, with_ip), arch))


def test_strength_interpolates(host, arch, base):
    with_ip = ip(host, base, arch)
    outs = [sample(host, adain(host, with_ip, strength=s), arch) for s in (0.0, 0.5, 1.0)]
    assert not torch.allclose(outs[1], outs[0], atol=1e-5) and not torch.allclose(outs[1], outs[2], atol=1e-5)


def test_input_model_is_never_mutated(host, arch, base):
    with_ip = ip(host, base, arch)
    before = snapshot_options(with_ip)
    fused = adain(host, with_ip)
    sample(host, fused, arch)
    assert snapshot_options(with_ip) == before
    assert fused is not with_ip and fused.model_options is not with_ip.model_options


def test_zero_ip_weight_gives_the_text_only_output(host, arch, base):  # fact 3
    text_only = sample(host, base, arch)
    out = sample(host, adain(host, ip(host, base, arch, weight=0.0)), arch)
    assert_close_numerics(out, text_only)


def test_empty_ip_mask_gives_text_only_and_full_mask_equals_no_mask(host, arch, base):
    text_only = sample(host, base, arch)
    empty = sample(host, adain(host, ip(host, base, arch, mask=torch.zeros(1, 64, 64))), arch)
    assert_close_numerics(empty, text_only)
    full = sample(host, adain(host, ip(host, base, arch, mask=torch.ones(1, 64, 64))), arch)
    assert_close_numerics(full, sample(host, adain(host, ip(host, base, arch)), arch))


# The half-mask and weight-type facts (inside the mask / in the layers a weight type feeds: the IP statistics;
# elsewhere: the text output bit for bit) are asserted layer by layer in tests/test_routing_graphs.py.


def test_stacked_ip_adapters_in_any_order(host, arch, base):
    """Adapters on different layers (style + composition); the same-layer sum is in test_routing_graphs.py."""
    two = ip(host, ip(host, base, arch, weight_type="style transfer"), arch, weight_type="composition", seed=5)
    fused = sample(host, adain(host, two), arch)
    assert torch.isfinite(fused).all()
    assert not torch.allclose(fused, sample(host, two, arch), atol=1e-5)
    assert torch.equal(fused, sample(host, ip(host, adain(host, ip(host, base, arch, weight_type="style transfer")),
                                              arch, weight_type="composition", seed=5), arch))


@pytest.mark.parametrize("cfg", [1.0, 5.0])
def test_batch_and_split_chunks(host, arch, base, cfg):
    model = adain(host, ip(host, base, arch))
    batched = sample(host, model, arch, batch=2, cfg=cfg)
    with host.force_split():
        split = sample(host, model, arch, batch=2, cfg=cfg)
    assert batched.shape[0] == 2
    assert_close_numerics(split, batched)
    single = sample(host, model, arch, batch=1, cfg=cfg)
    assert_close_numerics(batched[:1], single)


@pytest.mark.parametrize("sampler_name", ["euler_ancestral", "dpmpp_2m", "heun"])
def test_other_samplers_and_img2img(host, arch, base, sampler_name):
    model = adain(host, ip(host, base, arch))
    out = sample(host, model, arch, sampler_name=sampler_name)
    assert torch.isfinite(out).all()
    start = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    img2img = sample(host, model, arch, latent=start, denoise=0.5)
    assert torch.isfinite(img2img).all() and not torch.allclose(img2img, start["samples"])


def test_identical_runs_are_identical(host, arch, base):  # fact 9
    model = adain(host, ip(host, base, arch))
    assert torch.equal(sample(host, model, arch), sample(host, model, arch))


def test_no_ip_adapter_is_a_clear_error_at_sampling(host, arch, base):
    with pytest.raises(Exception, match=r"StyleStudio Cross-Modal AdaIN.*IPAdapter"):
        sample(host, adain(host, base), arch)


def test_bad_inputs_name_the_node(host, base):
    with pytest.raises(Exception, match="StyleStudio Cross-Modal AdaIN.*strength"):
        adain(host, base, strength=1.5)
    with pytest.raises(Exception, match="StyleStudio Cross-Modal AdaIN.*end_at"):
        adain(host, base, start_at=0.6, end_at=0.2)
    with pytest.raises(Exception, match="StyleStudio Cross-Modal AdaIN.*not a UNet"):
        adain(host, host.non_unet_model())
