"""StyleStudio Adapter Roles (issue 11 item 5: "give the user a way to override when it cannot tell"), on a host
(stand-in or real ComfyUI + IPAdapter_plus).

Graph: a style adapter (weight type "style transfer", only the style layers) then a second adapter on every
layer ("linear") that the router cannot tell (a plain IPAdapter_plus / stand-in adapter: no declared role, no
face projection). Facts: marked identity through the node, the second adapter keeps its plain sum in the student
rows (AdaIN fuses only the style) and stays in the teacher (teacher = a run with that adapter alone, no style);
"auto" on a model without a choice samples bit-identically; a bad spec is an error naming the node; a later Roles
node replaces an earlier one's choice, "auto" included.
"""
import importlib

import pytest
import torch

from helpers import adain, assert_close_numerics, ip, run_node, sample, snapshot_options, teacher
from stylestudio_core_import import core
from test_routing_graphs import _attention, _route, _terms, record_ip_layers

ROLES_NODE = "StyleStudioAdapterRoles"
NAME = "StyleStudio Adapter Roles"
fuse = core.adain.cross_modal_adain


def roles(host, model, spec):
    return run_node(host, ROLES_NODE, model=model, roles=spec)


def chosen(model):
    """The roles setting the model carries (None = no choice)."""
    return model.model_options.get("transformer_options", {}).get("stylestudio", {}).get("roles")


@pytest.fixture
def base(host, arch):
    return host.tiny_model(arch)


@pytest.fixture
def style_then_other(host, arch, base):
    return ip(host, ip(host, base, arch, weight_type="style transfer", seed=1), arch, weight_type="linear", seed=5)


@pytest.fixture
def other_alone(host, arch, base):
    """A plain run with only the second adapter (no style): what the teacher must be when it is identity."""
    return sample(host, ip(host, base, arch, weight_type="linear", seed=5), arch)


def _teacher_rows(host, model, arch):
    return sample(host, teacher(host, adain(host, model), return_teacher=True), arch)[1:]


# ------------------------------------------------------------------------------------------ the teacher
def test_identity_by_position_stays_in_the_teacher(host, arch, base, style_then_other, other_alone):
    plain = sample(host, base, arch)
    assert not torch.allclose(other_alone, plain, rtol=1e-3, atol=1e-3)  # the adapter visibly changes the run
    # the router cannot tell: both are style, so the teacher has no adapter at all
    assert_close_numerics(_teacher_rows(host, style_then_other, arch), plain)
    # "2=identity" through the node: the teacher keeps adapter 2 (and only it)
    assert_close_numerics(_teacher_rows(host, roles(host, style_then_other, "2=identity"), arch), other_alone)
    # the node may come anywhere on the MODEL path: before the adapters, or after the other StyleStudio nodes
    early = ip(host, ip(host, roles(host, base, "2=identity"), arch, weight_type="style transfer", seed=1),
               arch, weight_type="linear", seed=5)
    late = roles(host, teacher(host, adain(host, style_then_other), return_teacher=True), "2=identity")
    assert_close_numerics(_teacher_rows(host, early, arch), other_alone)
    assert_close_numerics(sample(host, late, arch)[1:], other_alone)


def test_position_wins_over_what_an_adapter_declares(host, arch, base, style_then_other, other_alone):
    """A per-position choice overrides a declared role; "all=..." only decides the adapters nothing else does."""
    m = style_then_other.clone()
    for obj in m.model_options["transformer_options"]["patches_replace"]["attn2"].values():
        obj.kwargs[1][core.routing.ROLE_KEY] = "identity"  # adapter 2 says it is identity
    assert_close_numerics(_teacher_rows(host, m, arch), other_alone)
    assert_close_numerics(_teacher_rows(host, roles(host, m, "2=style"), arch), sample(host, base, arch))
    # all=style leaves the declared identity alone
    assert_close_numerics(_teacher_rows(host, roles(host, m, "all=style"), arch), other_alone)


# -------------------------------------------------------------------------------------- the students
@torch.inference_mode()  # as ComfyUI samples (the real adapter's weights require grad)
def test_identity_by_position_keeps_its_plain_sum_under_adain(host, arch, style_then_other):
    """Student rows with adapter 2 = identity: AdaIN(T, S_1) + I_2 where both act, T + I_2 (the adapters' own
    sum, no fusion) where only adapter 2 does; by default both are fused together."""
    setting = chosen(roles(host, style_then_other, "2=identity"))
    both = identity_only = 0
    for key, q, k, v, eo, obj in record_ip_layers(host, style_then_other, arch):
        assert len(obj.callback) == 2
        text = _attention(q, k, v, eo["n_heads"])
        terms = [_term(obj, i, text, q, k, v, eo) for i in range(2)]
        if terms[1] is None:
            continue
        out = _route(obj, q, k, v, eo, adain_strength=1.0, roles=setting)
        default = _route(obj, q, k, v, eo, adain_strength=1.0)
        if terms[0] is not None:
            torch.testing.assert_close(out, fuse(text, terms[0]) + terms[1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(default, fuse(text, terms[0] + terms[1]), atol=1e-5, rtol=1e-5)
            both += 1
        elif identity_only < 4:
            torch.testing.assert_close(out, text + terms[1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(default, fuse(text, terms[1]), atol=1e-5, rtol=1e-5)
            assert not torch.allclose(out, default, atol=1e-4)
            identity_only += 1
    assert both >= 1 and identity_only == 4


def _term(obj, index, text, q, k, v, eo):
    """Adapter `index`'s own term in this layer (None where it returns IPAdapter_plus's integer 0), given the
    sum of the adapters before it, as the stacked object computes it."""
    summed = text
    for i, (callback, kwargs) in enumerate(zip(obj.callback, obj.kwargs)):
        term = callback(summed, q, k, v, eo, **kwargs)
        if i == index:
            return term if isinstance(term, torch.Tensor) else None
        if isinstance(term, torch.Tensor):
            summed = summed + term
    return None


# -------------------------------------------------------------------------------------------- auto
def test_auto_on_a_model_without_a_choice_samples_bit_identically(host, arch, base, style_then_other):
    for model in (base, style_then_other, adain(host, style_then_other),
                  teacher(host, adain(host, style_then_other))):
        before = snapshot_options(model)
        out = roles(host, model, "auto")
        assert out is not model and chosen(out) is None
        assert snapshot_options(model) == before  # the input model is never changed
        assert torch.equal(sample(host, out, arch), sample(host, model, arch))
    assert torch.equal(sample(host, roles(host, style_then_other, "  AUTO "), arch),
                       sample(host, style_then_other, arch))


# ------------------------------------------------------------------------------------ later replaces
def test_a_later_roles_node_replaces_the_earlier_choice(host, arch, base, style_then_other, other_alone):
    style_alone = sample(host, ip(host, base, arch, weight_type="style transfer", seed=1), arch)
    # all=identity then 2=identity: only adapter 2 (merged, adapter 1 would be identity too)
    replaced = roles(host, roles(host, style_then_other, "all=identity"), "2=identity")
    assert chosen(replaced) == {"default": None, "by_position": {2: "identity"}}
    assert_close_numerics(_teacher_rows(host, replaced, arch), other_alone)
    # 2=identity then 1=identity: only adapter 1
    assert_close_numerics(_teacher_rows(host, roles(host, roles(host, style_then_other, "2=identity"),
                                                    "1=identity"), arch), style_alone)
    # "auto" clears: the teacher is the run without adapters again, bit for bit as without any Roles node
    cleared = roles(host, teacher(host, adain(host, roles(host, style_then_other, "2=identity")),
                                  return_teacher=True), "auto")
    assert chosen(cleared) is None
    assert torch.equal(sample(host, cleared, arch),
                       sample(host, teacher(host, adain(host, style_then_other), return_teacher=True), arch))


def test_a_position_beyond_the_stack_is_reported(host, arch, style_then_other, caplog):
    """"3=identity" with two adapters would silently do nothing: one warning per run naming the node; none for a
    position that exists."""
    with caplog.at_level("WARNING", logger="StyleStudio"):
        sample(host, adain(host, roles(host, style_then_other, "2=identity")), arch, steps=2)
    assert NAME not in caplog.text
    with caplog.at_level("WARNING", logger="StyleStudio"):
        out = sample(host, adain(host, roles(host, style_then_other, "2=identity, 3=identity")), arch, steps=2)
    assert caplog.text.count(f"{NAME}: roles name adapter 3, but the model that reaches the sampler carries 2 ") == 1
    assert torch.equal(out, sample(host, adain(host, roles(host, style_then_other, "2=identity")), arch, steps=2))


# --------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("spec, expected", [
    ("2=identity", {"default": None, "by_position": {2: "identity"}}),
    ("2 = Identity; 3=style", {"default": None, "by_position": {2: "identity", 3: "style"}}),
    ("all=identity, 1=style", {"default": "identity", "by_position": {1: "style"}}),
    ("all=style 2=identity", {"default": "style", "by_position": {2: "identity"}}),
    ("auto", None), ("", None),
])
def test_specs_the_node_reads(host, spec, expected):
    assert chosen(roles(host, host.tiny_model("sd15"), spec)) == expected


@pytest.mark.parametrize("spec, says", [
    ("2=face", "is not 'N=style'"), ("x=style", "not an adapter number"), ("0=identity", "not an adapter number"),
    ("2", "is not 'N=style'"), ("identity", "is not 'N=style'"), ("2=identity, 2=style", "both"),
    ("all=style, all=identity", "both"), ("-1=style", "not an adapter number"),
])
def test_a_bad_spec_is_an_error_naming_the_node(host, spec, says):
    error = importlib.import_module(host.pack().__name__ + ".stylestudio_core.mechanism").StyleStudioError
    model = host.tiny_model("sd15")
    before = snapshot_options(model)
    with pytest.raises(error, match=rf"^{NAME}: roles: .*{says}"):
        roles(host, model, spec)
    assert snapshot_options(model) == before
