"""The routing's pure-torch facts (no host): how a stacked callback is classified as style or identity, the hot
path (no host read per layer, inactive layers untouched, row layouts cached per run, one-pass row operations)
and windows resolved against the model sampling that samples."""
import pytest
import torch
import torch.nn.functional as F

from stylestudio_core_import import core

routing, mechanism, layout_mod = core.routing, core.mechanism, core.layout
HEADS = 2


def attention(q, k, v, heads, **_):
    b, n, c = q.shape
    split = lambda t: t.view(b, -1, heads, c // heads).transpose(1, 2)
    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, n, c)


# ------------------------------------------------------------------------------------- style or identity
def ipadapter_attention(out, q, k, v, extra_options, tokens=None, weight=1.0, **_):
    """Stands for IPAdapter_plus's callback (same name, same 0-outside-the-weight-map contract)."""
    if isinstance(weight, dict):
        if extra_options["transformer_index"] not in weight:
            return 0
        weight = weight[extra_options["transformer_index"]]
    if weight == 0:
        return 0
    kv = tokens.expand(q.shape[0], -1, -1)
    return attention(q, kv, kv, HEADS) * weight


def pulid_attention(out, q, k, v, extra_options, pulid=None, tokens=None, weight=1.0, **_):
    kv = tokens.expand(q.shape[0], -1, -1)
    return attention(q, kv, kv, HEADS) * weight


class Stack:
    """An Attn2Replace-like object: stacked callbacks, each with its kwargs."""

    def __init__(self, *entries):
        self.callback = [cb for cb, _ in entries]
        self.kwargs = [dict(sigma_start=1e9, sigma_end=0.0, **kw) for _, kw in entries]

    def __call__(self, q, k, v, extra_options):
        out = attention(q, k, v, extra_options["n_heads"])
        for cb, kw in zip(self.callback, self.kwargs):
            out = out + cb(out, q, k, v, extra_options, **kw)
        return out


class MLPProjModelFaceId(torch.nn.Module):  # IPAdapter_plus's FaceID projection class name
    pass


class ImageProjModel(torch.nn.Module):
    pass


class IPAdapter(torch.nn.Module):  # the attributes IPAdapter_plus's IPAdapter module carries
    def __init__(self, projection, **flags):
        super().__init__()
        self.image_proj_model = projection
        self.is_sdxl, self.is_plus, self.is_full, self.is_portrait_unnorm, self.is_kwai_kolors = (False,) * 5
        self.__dict__.update(flags)


def _tokens(seed):
    return torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kwargs,callback,role", [
    (dict(ipadapter=IPAdapter(ImageProjModel())), ipadapter_attention, "style"),
    (dict(ipadapter=IPAdapter(MLPProjModelFaceId())), ipadapter_attention, "identity"),   # FaceID (+ Plus v2)
    (dict(ipadapter=IPAdapter(ImageProjModel(), is_portrait_unnorm=True)), ipadapter_attention, "identity"),
    (dict(ipadapter=IPAdapter(ImageProjModel(), is_full=True)), ipadapter_attention, "identity"),  # full face
    (dict(pulid=object()), pulid_attention, "identity"),                                   # PuLID_ComfyUI
    (dict(ipadapter=type("InstantID", (), {})()), lambda *a, **k: 0, "identity"),           # ComfyUI_InstantID
    (dict(stylestudio_role="identity", ipadapter=IPAdapter(ImageProjModel())), ipadapter_attention, "identity"),
    (dict(stylestudio_role="style", pulid=object()), pulid_attention, "style"),             # declared wins
    (dict(), lambda *a, **k: 0, "style"),                                                   # cannot tell: style
])
def test_callback_roles_are_declared_or_detected(kwargs, callback, role):
    assert routing.callback_role(callback, kwargs, 1, None) == role


def test_user_choice_by_position_wins_and_default_fills_the_undecided():
    face = dict(ipadapter=IPAdapter(MLPProjModelFaceId()))
    plain = dict(ipadapter=IPAdapter(ImageProjModel()))
    roles = {"default": "identity", "by_position": {1: "style"}}
    assert routing.callback_role(ipadapter_attention, face, 1, roles) == "style"      # position 1 chosen
    assert routing.callback_role(ipadapter_attention, plain, 2, roles) == "identity"  # undecided -> default
    assert routing.callback_role(ipadapter_attention, face, 2, {"default": "style"}) == "identity"  # detected


def _qkv(rows=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, 16, 8, generator=g), torch.randn(rows, 5, 8, generator=g),
            torch.randn(rows, 5, 8, generator=g))


class PoisonedSigmas:
    """extra_options["sigmas"] that fails on any read: a layer must take the call's sigma from the plan."""

    def __getattr__(self, name):
        raise AssertionError(f"the layer read sigmas.{name} (a host sync per layer)")

    def __getitem__(self, item):
        raise AssertionError("the layer indexed sigmas (a host sync per layer)")


def _eo(plan, cou=(1, 0), t_idx=6):
    return {routing.PLAN_KEY: plan, "cond_or_uncond": list(cou), "n_heads": HEADS, "sigmas": PoisonedSigmas(),
            "transformer_index": t_idx}


def test_style_fused_identity_added_teacher_keeps_identity_without_a_host_read():
    style_kw = dict(ipadapter=IPAdapter(ImageProjModel()), tokens=_tokens(1), weight=0.8)
    face_kw = dict(ipadapter=IPAdapter(MLPProjModelFaceId()), tokens=_tokens(2), weight=0.6)
    obj = Stack((ipadapter_attention, style_kw), (ipadapter_attention, face_kw))
    q, k, v = _qkv(rows=4)  # chunks [1, 0], each [student, teacher]
    plan = routing.CallPlan(has_teacher=True, adain_strength=1.0, sigma=5.0)
    out = routing.IPRoute(obj, plan, attention)(q, k, v, _eo(plan))
    s, t = [0, 2], [1, 3]
    text = attention(q, k, v, HEADS)
    style = ipadapter_attention(None, q, k, v, {"transformer_index": 6}, **style_kw)
    face = ipadapter_attention(None, q, k, v, {"transformer_index": 6}, **face_kw)
    torch.testing.assert_close(out[s], core.adain.cross_modal_adain(text[s], style[s]) + face[s])
    torch.testing.assert_close(out[t], text[t] + face[t])  # no style in the teacher, the face stays


class DispatchCounter(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_layer_without_an_active_adapter_returns_the_text_output_itself():
    outputs = []

    def recording_attention(q, k, v, heads):
        outputs.append(attention(q, k, v, heads))
        return outputs[-1]

    calls = []

    def ipadapter_attention_spy(*a, **kw):
        calls.append(1)
        return ipadapter_attention(*a, **kw)
    ipadapter_attention_spy.__name__ = "ipadapter_attention"

    obj = Stack((ipadapter_attention_spy, dict(tokens=_tokens(1), weight={6: 1.0})))
    q, k, v = _qkv(rows=4)
    with DispatchCounter() as plain:
        attention(q, k, v, HEADS)
    for plan in (routing.CallPlan(has_teacher=True, sigma=5.0), routing.CallPlan(adain_strength=1.0, sigma=5.0)):
        with DispatchCounter() as counter:
            out = routing.IPRoute(obj, plan, recording_attention)(q, k, v, _eo(plan, t_idx=3))
        assert out is outputs[-1]  # the text output as it is
        assert counter.ops == plain.ops  # and nothing but the text attention: no gather, clone or scatter
    assert not calls  # IPAdapter_plus's own "not this layer" is known before the call
    outside = Stack((ipadapter_attention, dict(tokens=_tokens(1), weight=1.0)))
    outside.kwargs[0].update(sigma_start=2.0, sigma_end=1.0)  # the call's sigma (5) is outside its window
    plan = routing.CallPlan(has_teacher=True, sigma=5.0)
    assert routing.IPRoute(outside, plan, recording_attention)(q, k, v, _eo(plan)) is outputs[-1]


def test_row_operations_are_one_pass_views():
    lay = layout_mod.RowLayout(8, [1, 0], has_teacher=True)
    x = torch.randn(8, 16, 4)
    with DispatchCounter() as counter:
        borrowed = lay.borrow_teacher(x)
    copies = [op for op in counter.ops if op not in ("view", "slice", "expand", "_unsafe_view", "select",
                                                     "alias", "reshape")]
    assert copies == ["clone"] or copies == ["_to_copy"] or len(copies) == 1, counter.ops
    expected = x.clone()
    expected[lay.student] = x[lay.teacher]
    assert torch.equal(borrowed, expected)
    s, t = lay.students(x), lay.teachers(x)
    assert torch.equal(s, x[lay.student]) and torch.equal(t, x[lay.teacher])
    assert torch.equal(lay.merge(s, t), x)


def test_row_layouts_are_cached_for_the_run():
    options = {"transformer_options": {
        mechanism.SETTINGS_KEY: {"teacher": {"start_at": 0.0, "end_at": 1.0, "share_cross_attention": False,
                                             "return_teacher": True}},
        mechanism.RUN_KEY: mechanism.RunState(1, 5.0, True),
        "patches_replace": {"attn2": {("output", 1, 0): Stack((ipadapter_attention, dict(tokens=_tokens(1))))}}}}
    plans = []

    def run(model, conds, x, t, mo):
        plans.append(mo["transformer_options"][routing.PLAN_KEY])
        return [x for _ in conds]

    model = type("M", (), {"model_sampling": FakeSampling()})()
    for sigma in (5.0, 3.0):
        mechanism.calc_cond_batch(run, model, [["c"], ["u"]], torch.zeros(2, 4, 2, 2), torch.full((2,), sigma),
                                  options, attention=attention)
    a, b = (p.layout(4, [1, 0]) for p in plans)
    assert a is b and plans[0] is not plans[1]
    assert plans[0].sigma == 5.0 and plans[1].sigma == 3.0


class FakeSampling:
    """A schedule whose percent_to_sigma is easy to read: sigma = 100 * (1 - percent), ComfyUI's ends."""

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return 100.0 * (1.0 - percent)


def test_windows_are_resolved_once_per_run_against_the_sampled_model():
    state = mechanism.RunState(1, 5.0, False)
    settings = {"adain": {"strength": 1.0, "start_at": 0.25, "end_at": 0.5},
                "teacher": {"start_at": 0.3, "end_at": 0.3, "share_cross_attention": False, "return_teacher": True},
                "guidance": {"style_cfg": 3.0, "sigma_start": 7.0, "sigma_end": 2.0}}
    model = type("M", (), {"model_sampling": FakeSampling()})()
    windows = mechanism.run_windows(state, settings, model)
    assert windows["adain"] == {"sigma_start": 75.0, "sigma_end": 50.0}
    assert windows["teacher"] == {"sigma_start": -1.0, "sigma_end": -1.0}  # empty: matches no sigma
    assert windows["guidance"] == {"sigma_start": 7.0, "sigma_end": 2.0}   # explicit sigmas as given
    model.model_sampling = None
    assert mechanism.run_windows(state, settings, model) is windows        # once per run
