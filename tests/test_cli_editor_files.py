"""stylestudio_cli on files the real editor wrote (unit tier: no browser, no ComfyUI).

tests/fixtures/editor_saved/ was made by the browser tier (tests/browser, STYLESTUDIO_WRITE_FIXTURES=1) with
ComfyUI v0.3.64 and its pinned frontend 1.27.10: shipped workflows saved by the editor's own Save unchanged,
subgraphs made with the editor's "Convert Selection to Subgraph" (nested, with a bypassed and a muted node
inside, a widget input crossing the boundary), and malformed widgets_values loaded into the editor. Next to each
file: ``<name>.prompt.json``, the editor's own ``app.graphToPrompt()`` output for it, and ``object_info.json``,
the server's node definitions. The CLI must convert each file to exactly the editor's prompt.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "editor_saved"
CASES = sorted(p.name[:-len(".prompt.json")] for p in FIX.glob("*.prompt.json"))


def _import_by_path(name: str, init: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


_import_by_path("stylestudio_cli", REPO / "stylestudio_cli" / "__init__.py")
from stylestudio_cli import convert  # noqa: E402


def load(name: str):
    return json.loads((FIX / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def defs():
    info = load("object_info.json")
    return {name: convert.NodeDef(inputs=d.get("input") or {}, outputs=tuple(d.get("output") or ()),
                                  output_node=bool(d.get("output_node")), display_name=d.get("display_name"),
                                  input_order=d.get("input_order"))
            for name, d in info.items()}


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def diff(editor: dict, cli: dict) -> list[str]:
    out = []
    for nid in sorted(set(editor) | set(cli)):
        e, c = editor.get(nid), cli.get(nid)
        if e is None or c is None:
            out.append(f"node {nid} is missing from {'the editor' if e is None else 'the CLI'}'s prompt")
            continue
        if e["class_type"] != c["class_type"]:
            out.append(f"node {nid}: class_type {e['class_type']} != {c['class_type']}")
        for name in sorted(set(e["inputs"]) | set(c["inputs"])):
            ev, cv = e["inputs"].get(name, "<absent>"), c["inputs"].get(name, "<absent>")
            if not _same(ev, cv):
                out.append(f"node {nid} {e['class_type']}.{name}: editor {ev!r} != CLI {cv!r}")
    return out


def test_fixtures_are_there():
    assert {"sdxl_saved_unchanged", "sd15_saved_unchanged", "sdxl_nested_subgraph_bypass",
            "sweep_branch_subgraph_muted", "malformed_ksampler_no_control"} <= set(CASES), CASES


def test_fixture_definitions_match_the_pack(defs, host):
    """The StyleStudio definitions the fixtures were made with still have the pack's current inputs (else the
    fixtures are stale: regenerate them with the browser tier)."""
    classes = host.node_classes()
    for name, d in defs.items():
        if name.startswith("StyleStudio"):
            cls = classes[name]
            current = {cat: list(v) for cat, v in cls.INPUT_TYPES().items() if cat in ("required", "optional")}
            assert {c: list(v) for c, v in d.inputs.items() if c in ("required", "optional")} == current, name


@pytest.mark.parametrize("case", CASES)
def test_cli_converts_like_the_editor(case, defs):
    conv = convert.ui_to_api(load(f"{case}.json"), defs)
    d = diff(load(f"{case}.prompt.json"), conv.prompt)
    assert not d, f"{case}: editor graphToPrompt vs CLI:\n" + "\n".join(d)
    if not case.startswith("malformed"):
        assert not conv.errors, "\n".join(map(str, conv.problems))


@pytest.mark.parametrize("case", [c for c in CASES if c.endswith("_saved_unchanged")])
def test_editor_save_has_upload_and_control_widgets_and_is_clean(case, defs):
    """What broke `validate` for every editor-saved file: LoadImage's `upload` input (the editor's upload
    button, type IMAGEUPLOAD) and its "image" value; KSampler's control_after_generate value. No problem at
    all may be reported for an unedited save."""
    data = load(f"{case}.json")
    img = next(n for n in data["nodes"] if n["type"] == "LoadImage")
    assert any(i["name"] == "upload" and i["type"] == "IMAGEUPLOAD" for i in img["inputs"]), img["inputs"]
    assert img["widgets_values"][1] == "image"
    conv = convert.ui_to_api(data, defs)
    assert conv.problems == [], "\n".join(map(str, conv.problems))
    (lid,) = [k for k, v in conv.prompt.items() if v["class_type"] == "LoadImage"]
    assert list(conv.prompt[lid]["inputs"]) == ["image"]
    ks = next(v for v in conv.prompt.values() if v["class_type"] == "KSampler")
    assert ks["inputs"]["seed"] == 42 and ks["inputs"]["steps"] == 50


def test_renamed_input_is_still_an_error_next_to_the_upload_button(defs):
    """Skipping the editor's own `upload` input must not hide a real renamed input."""
    data = load("sdxl_saved_unchanged.json")
    adain = next(n for n in data["nodes"] if n["type"] == "StyleStudioCrossModalAdaIN")
    inp = next(i for i in adain["inputs"] if i["name"] == "strength")
    inp["name"] = inp["widget"]["name"] = "weight"
    conv = convert.ui_to_api(data, defs)
    assert [p.kind for p in conv.errors] == ["unknown_input"] and "'weight'" in conv.errors[0].message


def test_nested_subgraph_with_a_bypassed_node(defs):
    data = load("sdxl_nested_subgraph_bypass.json")
    subs = data["definitions"]["subgraphs"]
    assert len(subs) == 2
    conv = convert.ui_to_api(data, defs)
    p = conv.prompt
    by_class = {v["class_type"]: k for k, v in p.items()}
    teacher, ipa = by_class["StyleStudioTeacherLayout"], by_class["IPAdapterAdvanced"]
    assert teacher.count(":") == 2 and ipa.count(":") == 1, list(p)  # outer:inner:node and outer:node
    assert "StyleStudioCrossModalAdaIN" not in by_class            # bypassed inside the nested subgraph
    assert p[teacher]["inputs"]["model"] == [ipa, 0]                # bypass passes through the boundary
    ks = next(v for v in p.values() if v["class_type"] == "KSampler")
    assert ks["inputs"]["model"] == [teacher, 0]                    # outputs through both boundaries
    assert not any(v["class_type"] not in defs for v in p.values())


def test_subgraph_with_a_muted_node_and_a_promoted_widget(defs):
    data = load("sweep_branch_subgraph_muted.json")
    conv = convert.ui_to_api(data, defs)
    ks_id = next(k for k, v in conv.prompt.items() if v["class_type"] == "KSampler" and ":" in k)
    ks = conv.prompt[ks_id]["inputs"]
    assert "model" not in ks and "muted" in conv.dropped[(ks_id, "model")]
    # the seed comes from the PrimitiveNode outside, through the subgraph input's promoted widget
    sg_node = next(n for n in data["nodes"] if n["type"] in {s["id"] for s in data["definitions"]["subgraphs"]})
    assert ks["seed"] == sg_node["widgets_values"][0] == 42
    assert not any(":" in k and v["class_type"] == "StyleStudioTeacherLayout" for k, v in conv.prompt.items())


def test_promoted_widget_value_of_the_subgraph_node_wins(defs):
    data = load("sweep_branch_subgraph_muted.json")
    sg_node = next(n for n in data["nodes"] if n["type"] in {s["id"] for s in data["definitions"]["subgraphs"]})
    # unlink the PrimitiveNode: the subgraph node's own widget value is what the editor sends
    for inp in sg_node["inputs"]:
        if inp.get("link") is not None and inp["type"] == "INT":
            lid, inp["link"] = inp["link"], None
            data["links"] = [l for l in data["links"] if l[0] != lid]
            for n in data["nodes"]:
                for o in n.get("outputs") or []:
                    if lid in (o.get("links") or []):
                        o["links"].remove(lid)
    sg_node["widgets_values"] = [1234]
    conv = convert.ui_to_api(data, defs)
    ks = next(v for k, v in conv.prompt.items() if v["class_type"] == "KSampler" and ":" in k)
    assert ks["inputs"]["seed"] == 1234


def test_malformed_values_are_shifted_by_position_and_reported(defs):
    """The editor assigns widgets_values by position: a KSampler without its control value gets steps = the
    cfg value, cfg = the sampler name, ... (its own graphToPrompt says so); the CLI gives the same prompt and
    an error saying what happened, instead of silently re-aligning by type."""
    conv = convert.ui_to_api(load("malformed_ksampler_no_control.json"), defs)
    editor = load("malformed_ksampler_no_control.prompt.json")
    ks_e = next(v for v in editor.values() if v["class_type"] == "KSampler")["inputs"]
    ks_c = next(v for v in conv.prompt.values() if v["class_type"] == "KSampler")["inputs"]
    assert ks_e["cfg"] == "euler" and ks_c["cfg"] == "euler" and ks_c["steps"] == ks_e["steps"]
    (err,) = conv.errors
    assert err.kind == "widget_values" and "by position" in err.message and "control_after_generate" in err.message
    assert "6 values for 7 widgets" in err.message


def test_short_and_long_widget_values_are_warnings(defs):
    conv = convert.ui_to_api(load("malformed_teacher_short.json"), defs)
    assert [p.severity for p in conv.problems] == ["warning"] and "return_teacher" in conv.problems[0].message
    conv = convert.ui_to_api(load("malformed_adain_extra.json"), defs)
    assert [p.severity for p in conv.problems] == ["warning"] and "ignored" in conv.problems[0].message


def test_editor_layout_of_widgets(defs):
    """The widget layout the CLI assumes, against the editor's own (the browser tier records it)."""
    names = lambda t: [w.name for w in convert.editor_widgets(defs[t])]  # noqa: E731
    assert names("LoadImage") == ["image", "upload"]
    assert names("KSampler") == ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler",
                                 "denoise"]
    sent = lambda t: [w.name for w in convert.editor_widgets(defs[t]) if w.in_prompt]  # noqa: E731
    assert sent("LoadImage") == ["image"] and "control_after_generate" not in sent("KSampler")


@pytest.mark.parametrize("case,mode", [("sdxl_subgraph_node_bypassed", "bypassed"),
                                       ("sdxl_subgraph_node_muted", "muted")])
def test_mode_of_the_subgraph_node_itself(case, mode, defs):
    """The editor (1.27.10) still sends the nodes inside a muted or bypassed subgraph node (its graphToPrompt
    is in the fixture); a muted one even keeps feeding the KSampler. The CLI reproduces it and warns."""
    conv = convert.ui_to_api(load(f"{case}.json"), defs)
    inner = sorted(k for k in conv.prompt if ":" in k)
    assert [conv.prompt[k]["class_type"] for k in inner] == ["StyleStudioCrossModalAdaIN",
                                                            "StyleStudioTeacherLayout"]
    ks = next(v for v in conv.prompt.values() if v["class_type"] == "KSampler")
    ipa = next(k for k, v in conv.prompt.items() if v["class_type"] == "IPAdapterAdvanced")
    assert ks["inputs"]["model"] == ([ipa, 0] if mode == "bypassed" else [inner[1], 0])
    (w,) = [p for p in conv.problems if p.kind == "subgraph_mode"]
    assert w.severity == "warning" and mode in w.message


def test_muted_primitive_node_still_drives_its_widgets(defs):
    data = load("sweep_primitive_muted.json")
    prim = next(n for n in data["nodes"] if n["type"] == "PrimitiveNode")
    assert prim["mode"] == 2 and prim["widgets_values"][0] == 1234
    for n in data["nodes"]:  # the editor saved the driven value into the seeds too; make them differ
        if n["type"] == "KSampler":
            n["widgets_values"][0] = 7
    conv = convert.ui_to_api(data, defs)
    assert [v["inputs"]["seed"] for v in conv.prompt.values() if v["class_type"] == "KSampler"] == [1234] * 3
