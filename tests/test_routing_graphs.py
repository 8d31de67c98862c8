"""Routing on real graphs, on a host (stand-in or real ComfyUI + IPAdapter_plus): windows placed on the schedule
that samples, stacked adapters, share_cross_attention in IP layers, masks and weight types asserted as the
method's facts, style vs identity adapters, and the memory a StyleStudio node adds.

The layer-level tests record the real inputs of every IP layer (q, k, v, extra_options) in a plain IP-Adapter run
and feed them to the route, so the adapter callbacks are the host's own (IPAdapter_plus's on the host tier)."""
import pytest
import torch

from helpers import adain, assert_close_numerics, guidance, ip, sample, teacher
from stylestudio_core_import import core

routing = core.routing
fuse = core.adain.cross_modal_adain


@pytest.fixture
def base(host, arch):
    return host.tiny_model(arch)


def _attention(q, k, v, heads):
    from comfy.ldm.modules.attention import optimized_attention
    return optimized_attention(q, k, v, heads)


# ------------------------------------------------------------------------------ windows at sampling time
def _calls_with_rows(model, rows):
    seen = []

    def count(n, extra_options):
        seen.append(n.shape[0])
        return n

    m = model.clone()
    m.set_model_attn1_output_patch(count)
    return m, seen


@pytest.mark.parametrize("feature", ["teacher", "adain", "guidance"])
def test_window_follows_a_model_sampling_node_in_either_order(host, arch, base, feature):
    """start_at/end_at are fractions of the schedule that samples: a ModelSampling node after the StyleStudio node
    gives what it gives before it (the window is placed on the EDM schedule either way)."""
    node = {"teacher": lambda m: teacher(host, m, start_at=0.0, end_at=0.5),
            "adain": lambda m: adain(host, m, start_at=0.3, end_at=0.6),
            "guidance": lambda m: guidance(host, m, style_cfg=9.0, start_at=0.3, end_at=0.6)}[feature]
    with_ip = ip(host, base, arch)
    after = node(host.model_sampling_edm(with_ip, sigma_max=40.0, sigma_min=0.01))
    before = host.model_sampling_edm(node(with_ip), sigma_max=40.0, sigma_min=0.01)
    assert torch.equal(sample(host, before, arch, steps=8), sample(host, after, arch, steps=8))
    if feature == "teacher":  # and the count of teacher steps is the EDM schedule's (4 of 8 here)
        counted, rows = _calls_with_rows(before, 2)
        sample(host, counted, arch, steps=8)
        edm = host.model_sampling_edm(base, sigma_max=40.0, sigma_min=0.01).get_model_object("model_sampling")
        import comfy.samplers
        sigmas = comfy.samplers.calculate_sigmas(edm, "normal", 8)[:-1]
        expected = int((sigmas >= edm.percent_to_sigma(0.5)).sum())
        per_call = len(rows) // 8
        assert sum(1 for r in rows[::per_call] if r == 4) == expected


# ------------------------------------------------------------------------------------------------ memory
def _adapter_tensors(model):
    """{data_ptr: nbytes} of every tensor inside the IP-Adapter modules the model's attn2 slots hold."""
    out = {}
    for obj in model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {}).values():
        for kw in getattr(obj, "kwargs", []):
            module = kw.get("ipadapter")
            if isinstance(module, torch.nn.Module):
                for t in list(module.parameters()) + list(module.buffers()):
                    out[t.data_ptr()] = t.numel() * t.element_size()
    return out


def test_stylestudio_nodes_never_copy_the_adapter_weights(host, arch, base):
    with_ip = ip(host, base, arch)
    own = _adapter_tensors(with_ip)
    assert own and sum(own.values()) > 0
    chained = guidance(host, teacher(host, adain(host, with_ip)), style_cfg=8.0)
    assert _adapter_tensors(chained) == own  # the same storage, no new bytes
    assert chained.model_options is not with_ip.model_options
    slots, ours = (m.model_options["transformer_options"]["patches_replace"]["attn2"] for m in (with_ip, chained))
    assert slots is not ours and all(ours[k] is slots[k] for k in slots)  # own slots, shared objects
    # the other order: StyleStudio before the adapter, then another StyleStudio node after it
    before = ip(host, adain(host, base), arch)
    assert _adapter_tensors(teacher(host, before)) == _adapter_tensors(before)
    # ...and the shared objects still sample as the deep copies did
    assert torch.equal(sample(host, chained, arch), sample(host, guidance(host, teacher(host, adain(host, ip(
        host, base, arch))), style_cfg=8.0), arch))


# ---------------------------------------------------------------------------- layer inputs of a real run
class _Recorder:
    def __init__(self, inner, key, records):
        self.inner, self.key, self.records = inner, key, records

    def __call__(self, q, k, v, extra_options):
        self.records.append((self.key, q, k, v, dict(extra_options)))
        return self.inner(q, k, v, extra_options)


def record_ip_layers(host, model, arch, **kw):
    """[(key, q, k, v, extra_options, IP object)] of every IP layer call in one step of a plain run of `model`."""
    m = model.clone()
    slots = m.model_options["transformer_options"]["patches_replace"]["attn2"]
    records = []
    objects = dict(slots)
    for key, obj in objects.items():
        slots[key] = _Recorder(obj, key, records)
    sample(host, m, arch, steps=1, **kw)
    return [(key, q, k, v, eo, objects[key]) for key, q, k, v, eo in records]


def _terms(obj, text, q, k, v, eo):
    """The adapters' own terms, as their object sums them (the integer 0 outside a layer is skipped)."""
    terms, summed = [], text
    for callback, kwargs in zip(obj.callback, obj.kwargs):
        term = callback(summed, q, k, v, eo, **kwargs)
        if isinstance(term, torch.Tensor):
            terms.append(term)
            summed = summed + term
    return terms


def _route(obj, q, k, v, eo, **plan):
    plan = routing.CallPlan(**plan)
    return routing.IPRoute(obj, plan, _attention)(q, k, v, {**eo, routing.PLAN_KEY: plan})


def _stats_match(out, ref, rows=slice(None), tokens=slice(None)):
    o, r = out[rows, tokens].double(), ref[rows, tokens].double()
    scale = max(1.0, float(r.abs().max()))
    torch.testing.assert_close(o.mean(1), r.mean(1), atol=1e-4 * scale, rtol=1e-4)
    torch.testing.assert_close(o.std(1), r.std(1), atol=1e-4 * scale, rtol=1e-4)


def assert_fused(out, text, s):
    """method.md facts 1 and 3, row by row: where the IP term is (its non-zero tokens) the output has its
    statistics; everywhere else the output is the text output, bit for bit. Returns the rows with IP (a row can
    have none: IPAdapter_plus's zero-image uncond tokens give a zero term with a base adapter)."""
    fused = 0
    for row in range(s.shape[0]):
        inside = (s[row] != 0).any(-1)
        assert torch.equal(out[row, ~inside], text[row, ~inside].to(out.dtype))
        if inside.any():
            _stats_match(out[row:row + 1], s[row:row + 1], tokens=inside)
            fused += 1
    return fused


@torch.inference_mode()  # as ComfyUI samples (the real adapter's weights require grad)
def test_stacked_adapters_on_the_same_layers_fuse_their_sum(host, arch, base):
    """Two adapters stacked in one slot (IPAdapter_plus's .add): AdaIN takes the statistics of S1 + S2, not of
    the last adapter's term."""
    two = ip(host, ip(host, base, arch, weight_type="linear", seed=1), arch, weight_type="linear", seed=5)
    checked = 0
    for key, q, k, v, eo, obj in record_ip_layers(host, two, arch):
        assert len(obj.callback) == 2
        text = _attention(q, k, v, eo["n_heads"])
        terms = _terms(obj, text, q, k, v, eo)
        if len(terms) != 2:
            continue
        out = _route(obj, q, k, v, eo, adain_strength=1.0)
        torch.testing.assert_close(out, fuse(text, terms[0] + terms[1]), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out, fuse(text, terms[1]), atol=1e-4)
        checked += 1
    assert checked >= (10 if arch == "sd15" else 5)


@torch.inference_mode()  # as ComfyUI samples (the real adapter's weights require grad)
def test_share_cross_attention_in_ip_layers_uses_the_teachers_text_output(host, arch, base):
    """share_cross_attention in an IP layer: student rows = AdaIN(teacher's text output, the student's own style
    term) (without AdaIN: their sum); teacher rows = the teacher's text output."""
    with_ip = ip(host, base, arch, weight_type="linear")
    checked = 0
    for key, q, k, v, eo, obj in record_ip_layers(host, with_ip, arch)[:6]:
        g = torch.Generator().manual_seed(checked)
        per = q.shape[0] // len(eo["cond_or_uncond"])  # chunks become [students | teachers]

        def merge(s, t):
            return torch.cat([torch.cat([s[c * per:(c + 1) * per], t[c * per:(c + 1) * per]])
                              for c in range(len(eo["cond_or_uncond"]))])

        rows = torch.arange(2 * q.shape[0]).view(-1, 2, per)
        students, teachers = rows[:, 0].flatten(), rows[:, 1].flatten()
        q_teacher = q + torch.randn(q.shape, generator=g, dtype=q.dtype) * q.std()
        qd, kd, vd = merge(q, q_teacher), merge(k, k), merge(v, v)
        text_t = _attention(q_teacher, k, v, eo["n_heads"])
        terms = _terms(obj, _attention(q, k, v, eo["n_heads"]), q, k, v, eo)
        style = sum(terms[1:], terms[0])
        for strength in (1.0, 0.0):
            out = _route(obj, qd, kd, vd, eo, has_teacher=True, couple=True, share_cross=True,
                         adain_strength=strength)
            expected = fuse(text_t, style) if strength else text_t + style
            torch.testing.assert_close(out[students], expected, atol=1e-5, rtol=1e-5)
            assert torch.equal(out[teachers], text_t.to(out.dtype))
        checked += 1
    assert checked == 6


@torch.inference_mode()  # as ComfyUI samples (the real adapter's weights require grad)
def test_half_mask_fuses_inside_and_keeps_the_text_outside(host, arch, base):
    """An attention mask over the left half: in every IP layer the tokens outside it keep the text output
    exactly, and inside it the fused output has the IP term's statistics (taken over the inside tokens)."""
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1
    masked = ip(host, base, arch, weight_type="linear", mask=mask)
    checked = 0
    for key, q, k, v, eo, obj in record_ip_layers(host, masked, arch):
        text = _attention(q, k, v, eo["n_heads"])
        terms = _terms(obj, text, q, k, v, eo)
        if not terms:
            continue
        s = terms[0]
        out = _route(obj, q, k, v, eo, adain_strength=1.0)
        inside = (s != 0).any(-1)  # the mask's tokens on this layer's grid, per row
        assert not inside.all(dim=1).any(), "the half mask leaves tokens without IP in every row"
        checked += assert_fused(out, text, s)
    assert checked >= 5
    half = sample(host, adain(host, masked), arch)
    assert not torch.allclose(half, sample(host, adain(host, ip(host, base, arch, weight_type="linear")), arch),
                              atol=1e-4)


@pytest.mark.parametrize("weight_type", ["style transfer", "composition", "style and composition", "linear"])
@torch.inference_mode()
def test_ip_weight_types_fuse_exactly_the_layers_they_feed(host, arch, base, weight_type):
    """In the layers a weight type feeds, the fused output takes the IP term's statistics; in the others the
    layer's output is the text output, bit for bit (AdaIN never touches a layer without IP)."""
    with_ip = ip(host, base, arch, weight_type=weight_type)
    fed = plain = 0
    for key, q, k, v, eo, obj in record_ip_layers(host, with_ip, arch):
        text = _attention(q, k, v, eo["n_heads"])
        terms = _terms(obj, text, q, k, v, eo)
        out = _route(obj, q, k, v, eo, adain_strength=1.0)
        if terms:
            assert assert_fused(out, text, terms[0]) >= 1
            fed += 1
        else:
            assert torch.equal(out, text.to(out.dtype))
            plain += 1
    assert fed >= 1
    assert plain >= (1 if weight_type != "linear" else 0)
    if weight_type == "linear":
        assert plain == 0


# ------------------------------------------------------------------------------------- style or identity
def _roles(host, model, spec):
    return host.pack().nodes.patching.with_adapter_roles(model, spec)


def _declare(model, position, role):
    """A clone whose adapter at `position` declares its role in its kwargs (as an adapter written for StyleStudio
    does). clone() deep-copies the patch objects, so the input keeps its own."""
    m = model.clone()
    for obj in m.model_options["transformer_options"]["patches_replace"]["attn2"].values():
        obj.kwargs[position - 1][routing.ROLE_KEY] = role
    return m


def test_identity_adapters_stay_in_the_teacher(host, arch, base):
    """Style + identity (face) adapters: the layout teacher drops the style and keeps the identity, so its rows
    equal a plain run with the identity adapter alone; the identity can be declared by the adapter or chosen by
    the user (adapter 2 = identity)."""
    style_then_face = ip(host, ip(host, base, arch, weight_type="style transfer", seed=1), arch,
                         weight_type="linear", seed=5)
    face_alone = sample(host, ip(host, base, arch, weight_type="linear", seed=5), arch)
    for model in (_roles(host, style_then_face, "2=identity"), _declare(style_then_face, 2, "identity")):
        out = sample(host, teacher(host, adain(host, model), return_teacher=True), arch)
        assert_close_numerics(out[1:], face_alone)
    # by default both are style: the teacher is the plain text-only run
    out = sample(host, teacher(host, style_then_face, return_teacher=True), arch)
    assert_close_numerics(out[1:], sample(host, base, arch))
    # "all=identity" marks every adapter it cannot tell: the teacher is the plain IP run then
    out = sample(host, teacher(host, _roles(host, style_then_face, "all=identity"), return_teacher=True), arch)
    assert_close_numerics(out[1:], sample(host, style_then_face, arch))


@torch.inference_mode()  # as ComfyUI samples (the real adapter's weights require grad)
def test_adain_fuses_the_style_and_adds_the_identity(host, arch, base):
    """Students: AdaIN(T, S_style) + I_identity, in every layer with both."""
    model = _declare(ip(host, ip(host, base, arch, weight_type="linear", seed=1), arch, weight_type="linear",
                        seed=5), 2, "identity")
    checked = 0
    for key, q, k, v, eo, obj in record_ip_layers(host, model, arch)[:6]:
        text = _attention(q, k, v, eo["n_heads"])
        style, face = _terms(obj, text, q, k, v, eo)
        out = _route(obj, q, k, v, eo, adain_strength=1.0)
        torch.testing.assert_close(out, fuse(text, style) + face, atol=1e-5, rtol=1e-5)
        checked += 1
    assert checked == 6


def test_bad_adapter_roles_name_the_node(host, base):
    with pytest.raises(Exception, match=r"StyleStudio Adapter Roles: roles"):
        _roles(host, base, "2=face")
    with pytest.raises(Exception, match=r"StyleStudio Adapter Roles: .*adapter number"):
        _roles(host, base, "x=style")
