"""The V3 node schema (issue 12): saved workflows keep loading, registration goes through comfy_entrypoint, and the
unit tier's stand-in of comfy_api (tests/standin/comfy_api) says exactly what the real ComfyUI says.

Both tiers: the widget contract of every shipped node (input ids, order, types, defaults, ranges, outputs) is
frozen below, in the V1 view that the editor and the workflow files use (``INPUT_TYPES()`` / ``RETURN_TYPES``);
nodes run through ``FUNCTION`` with inputs by name, as ComfyUI's executor calls them.
Host tier: ComfyUI's own loader registered the nodes through ``comfy_entrypoint`` (not a module-level mapping),
the server's node info is what the help panel needs, and the stand-in's schema output equals the real one's.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
HOST = bool(os.environ.get("COMFYUI_PATH"))
HOST_SKIP = "host tier: set COMFYUI_PATH=/path/to/ComfyUI to compare with the real comfy_api"

#: The widget contract as the V1 nodes shipped it (captured from the pre-V3 INPUT_TYPES with _v1_contract): what
#: saved workflows store by position (widgets_values) and by name (API format). Tooltips may change; nothing else
#: here may. Converting another V1 node: add its entry here from the V1 class first, then convert.
FROZEN = {
    "StyleStudioCrossModalAdaIN": {
        "display_name": "StyleStudio Cross-Modal AdaIN", "outputs": ["MODEL"],
        "inputs": [["model", "MODEL", {}],
                   ["strength", "FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}],
                   ["start_at", "FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}],
                   ["end_at", "FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}]]},
    "StyleStudioTeacherLayout": {
        "display_name": "StyleStudio Teacher Layout", "outputs": ["MODEL"],
        "inputs": [["model", "MODEL", {}],
                   ["start_at", "FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}],
                   ["end_at", "FLOAT", {"default": 0.4, "min": 0.0, "max": 1.0, "step": 0.001}],
                   ["share_cross_attention", "BOOLEAN", {"default": False}],
                   ["return_teacher", "BOOLEAN", {"default": False}]]},
    "StyleStudioStyleGuidance": {
        "display_name": "StyleStudio Style Guidance", "outputs": ["MODEL"],
        "inputs": [["model", "MODEL", {}],
                   ["style_cfg", "FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
                   ["start_at", "FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}],
                   ["end_at", "FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}]]},
    # The two style-adapter nodes were converted on the branch that added them (V1 lists as combos: the editor
    # stores the chosen string either way). The loader's options are the user's files, so not frozen.
    "StyleStudioStyleAdapterLoader": {
        "display_name": "StyleStudio Style Adapter Loader", "outputs": ["STYLE_ADAPTER"],
        "inputs": [["adapter_name", "COMBO", {"multiselect": False}]]},
    "StyleStudioApplyStyleAdapter": {
        "display_name": "StyleStudio Apply Style Adapter", "outputs": ["MODEL"],
        "inputs": [["model", "MODEL", {}],
                   ["style_adapter", "STYLE_ADAPTER", {}],
                   ["clip_vision", "CLIP_VISION", {}],
                   ["image", "IMAGE", {}],
                   ["weight", "FLOAT", {"default": 1.0, "min": -1.0, "max": 5.0, "step": 0.05}],
                   ["blocks", "COMBO", {"default": "up", "multiselect": False, "options": ["style", "up", "all"]}],
                   ["start_at", "FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}],
                   ["end_at", "FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}],
                   ["image_negative", "IMAGE", {}, "optional"],
                   ["attn_mask", "MASK", {}, "optional"]]},
    "StyleStudioAdapterRoles": {
        "display_name": "StyleStudio Adapter Roles", "outputs": ["MODEL"],
        "inputs": [["model", "MODEL", {}],
                   ["roles", "STRING", {"default": "auto", "multiline": False}]]},
}
#: Combo inputs whose options are the user's model files (not part of the contract).
FILE_LISTS = {("StyleStudioStyleAdapterLoader", "adapter_name")}

# What a node class tells ComfyUI (the server's /object_info entry and the V1 attributes the executor and the
# CLI read), as JSON. Run in this process and, for the comparison, in a stand-in process.
DESCRIBE = r'''
def describe(cls):
    import json
    info = cls.GET_NODE_INFO_V1()
    info.pop("python_module", None)  # where the loader put it: "custom_nodes.<folder>" vs "nodes"
    attrs = {a: getattr(cls, a) for a in ("RETURN_TYPES", "RETURN_NAMES", "OUTPUT_TOOLTIPS", "OUTPUT_IS_LIST",
                                          "DESCRIPTION", "CATEGORY", "OUTPUT_NODE", "FUNCTION", "INPUT_IS_LIST",
                                          "DEPRECATED", "EXPERIMENTAL", "API_NODE", "NOT_IDEMPOTENT")}
    out = {"info": info, "attrs": attrs, "INPUT_TYPES": cls.INPUT_TYPES()}
    return json.loads(json.dumps(out, default=str))
'''
_ns: dict = {}
exec(DESCRIBE, _ns)
describe = _ns["describe"]

STANDIN_SCRIPT = DESCRIBE + r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from hosts.standin_host import StandinHost
classes = StandinHost().node_classes()
print("STANDIN-JSON " + json.dumps({name: describe(cls) for name, cls in classes.items()}))
'''


def _v1_contract(cls) -> dict:
    """[input id, type, options without tooltip] in the editor's order (required, then optional; an optional
    input's row ends with "optional"), and the output types."""
    inputs = cls.INPUT_TYPES()
    assert set(inputs) <= {"required", "optional", "hidden"}, inputs.keys()
    rows = []
    for section in ("required", "optional"):
        for name, spec in inputs.get(section, {}).items():
            options = {k: v for k, v in (spec[1] if len(spec) > 1 else {}).items() if k != "tooltip"
                       and not (k == "options" and (cls.GET_SCHEMA().node_id, name) in FILE_LISTS)}
            rows.append([name, str(spec[0]), options] + (["optional"] if section == "optional" else []))
    return {"inputs": rows, "outputs": [str(t) for t in cls.RETURN_TYPES]}


@pytest.fixture(scope="module")
def classes(host):
    return host.node_classes()


@pytest.mark.parametrize("node_id", sorted(FROZEN))
def test_widget_contract_is_unchanged(classes, node_id):
    cls = classes[node_id]
    frozen = FROZEN[node_id]
    assert _v1_contract(cls) == {"inputs": frozen["inputs"], "outputs": frozen["outputs"]}
    assert cls.GET_SCHEMA().display_name == frozen["display_name"]


def test_nodes_run_through_function_and_return_node_output(host, classes):
    from comfy_api.latest import io
    model = host.tiny_model("sd15")
    for node_id, cls in classes.items():
        if node_id not in FROZEN or any(kind not in ("MODEL", "FLOAT", "BOOLEAN", "INT", "STRING")
                                        for _name, kind, *_ in FROZEN[node_id]["inputs"]):
            continue  # (the style-adapter nodes need adapters and images: tests/test_native_adapter_nodes.py)
        node = cls()
        assert node.FUNCTION == "EXECUTE_NORMALIZED"
        inputs = {name: opts.get("default") for name, _kind, opts in FROZEN[node_id]["inputs"]}
        inputs["model"] = model
        out = getattr(node, node.FUNCTION)(**inputs)
        assert isinstance(out, io.NodeOutput) and len(out.args) == 1, node_id
        patched = out[0]
        assert patched is not model and type(patched) is type(model), f"{node_id} must return a clone"


def test_a_wrong_input_name_is_a_type_error(host, classes):
    node = classes["StyleStudioCrossModalAdaIN"]()
    with pytest.raises(TypeError):
        getattr(node, node.FUNCTION)(model=host.tiny_model("sd15"), strenght=1.0, start_at=0.0, end_at=1.0)


# --- host tier -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chost(host):
    if host.name != "comfyui":
        pytest.skip(HOST_SKIP)
    return host


def test_comfyui_registered_the_nodes_through_comfy_entrypoint(chost):
    import nodes
    from comfy_api.latest import io
    from hosts.comfyui_host import PACK_DIR_NAME
    pack = chost.pack()
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS")  # else the loader would never have called comfy_entrypoint
    registry = sys.modules[pack.__name__ + ".nodes"]  # imported by nothing but comfy_entrypoint
    assert registry.NODES
    for cls in registry.NODES:
        schema = cls.GET_SCHEMA()
        assert issubclass(cls, io.ComfyNode)
        assert nodes.NODE_CLASS_MAPPINGS[schema.node_id] is cls
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS[schema.node_id] == schema.display_name
        # the editor finds a custom node's help page under /extensions/<folder>/docs/ from this module path
        assert cls.GET_NODE_INFO_V1()["python_module"] == f"custom_nodes.{PACK_DIR_NAME}"
    assert os.path.realpath(nodes.EXTENSION_WEB_DIRS[PACK_DIR_NAME]) == os.path.realpath(REPO / "web")
    log = [ln for ln in chost.load_log if "comfy_entrypoint" in ln or "Skip " in ln]
    assert not [ln for ln in log if PACK_DIR_NAME in ln], log


def test_standin_schema_output_equals_the_real_one(chost):
    real = {name: describe(cls) for name, cls in chost.node_classes().items()}
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "IPADAPTER_PLUS_PATH")}
    proc = subprocess.run([sys.executable, "-c", STANDIN_SCRIPT, str(TESTS)], capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("STANDIN-JSON ")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    standin = json.loads(line[0].split(" ", 1)[1])
    assert sorted(standin) == sorted(real)
    for described in (real, standin):  # a model-file list is the folder's content, not the schema
        for node_id, input_id in FILE_LISTS:
            for inputs in (described[node_id]["INPUT_TYPES"], described[node_id]["info"]["input"]):
                inputs["required"][input_id][1].pop("options", None)
    for name in real:
        assert standin[name] == real[name], name


def test_a_comfy_entrypoint_failure_is_logged_with_its_traceback(chost, tmp_path, caplog):
    """A broken copy of the pack: ComfyUI reports only the message of an entrypoint error, the pack logs the
    traceback so a bug report has it."""
    import asyncio
    import shutil
    import nodes
    copy = tmp_path / "StyleStudioBrokenCopy"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns("tests", "benchmarks", "workflows", ".git",
                                                              "__pycache__"))
    (copy / "nodes" / "teacher_layout.py").write_text("raise RuntimeError('deliberately broken')\n")
    before = dict(nodes.NODE_CLASS_MAPPINGS)
    with caplog.at_level("WARNING"):
        ok = asyncio.run(nodes.load_custom_node(str(copy), ignore=set(before)))
    assert ok is False
    assert dict(nodes.NODE_CLASS_MAPPINGS) == before
    text = caplog.text
    assert "deliberately broken" in text and "Traceback" in text and "teacher_layout.py" in text, text
    nodes.LOADED_MODULE_DIRS.pop(copy.name, None)
    nodes.EXTENSION_WEB_DIRS.pop(copy.name, None)
