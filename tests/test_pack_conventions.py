"""Conventions every node of the pack must follow (issues: foundation, 12). New nodes are covered automatically:
every class in nodes.NODES must be a V3 ``io.ComfyNode``, registered through ``comfy_entrypoint()``."""
import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


#: Every node id the pack has ever shipped. Saved workflows reference nodes by these ids: none may disappear or
#: change. A new node's id is appended here when it ships (the test below fails until it is).
SHIPPED_NODE_IDS = (
    "StyleStudioCrossModalAdaIN",
    "StyleStudioTeacherLayout",
    "StyleStudioStyleGuidance",
    "StyleStudioStyleAdapterLoader",
    "StyleStudioApplyStyleAdapter",
    "StyleStudioAdapterRoles",
)
#: Ids being added on other branches; allowed, not yet required. Move them to SHIPPED_NODE_IDS on merge.
PENDING_NODE_IDS = ()
WIDGET_TYPES = ("FLOAT", "INT", "BOOLEAN", "STRING", "COMBO")


@pytest.fixture(scope="module")
def pack(host):
    return host.pack()


@pytest.fixture(scope="module")
def io():
    from comfy_api.latest import io as comfy_io  # the real one on the host tier, tests/standin on the unit tier
    return comfy_io


def _registry(pack):
    """The pack's ``nodes`` subpackage (imported by comfy_entrypoint, not by the pack's __init__.py)."""
    import importlib
    return importlib.import_module(pack.__name__ + ".nodes")


def _nodes(pack):
    assert _registry(pack).NODES, "no nodes registered"
    return list(_registry(pack).NODES)


def test_registration_is_v3_only(pack, io):
    import asyncio
    from comfy_api.latest import ComfyExtension
    # a module-level NODE_CLASS_MAPPINGS would make ComfyUI's loader skip comfy_entrypoint (nodes.py, v0.3.64)
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS"), "the pack must register through comfy_entrypoint() only"
    extension = asyncio.run(pack.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    listed = asyncio.run(extension.get_node_list())
    assert listed == _nodes(pack)
    for cls in listed:
        assert isinstance(cls, type) and issubclass(cls, io.ComfyNode), \
            f"{cls!r} is not an io.ComfyNode: convert it to the V3 schema (see nodes/cross_modal_adain.py)"
    ids = [cls.GET_SCHEMA().node_id for cls in listed]
    assert len(set(ids)) == len(ids), ids
    assert _registry(pack).NODE_CLASS_MAPPINGS == dict(zip(ids, listed))
    assert _registry(pack).NODE_DISPLAY_NAME_MAPPINGS == {c.GET_SCHEMA().node_id: c.GET_SCHEMA().display_name
                                                      for c in listed}


def test_node_ids_never_change(pack):
    ids = set(_registry(pack).NODE_CLASS_MAPPINGS)
    missing = [i for i in SHIPPED_NODE_IDS if i not in ids]
    assert not missing, f"shipped node ids disappeared (saved workflows would break): {missing}"
    unknown = sorted(ids - set(SHIPPED_NODE_IDS) - set(PENDING_NODE_IDS))
    assert not unknown, f"new node ids {unknown}: add them to SHIPPED_NODE_IDS (and never change them again)"


def test_every_node_follows_the_conventions(pack, io):
    import inspect
    for cls in _nodes(pack):
        schema = cls.GET_SCHEMA()  # validates (unique ids) as ComfyUI does at load
        name = schema.node_id
        assert name.startswith("StyleStudio") and schema.display_name.startswith("StyleStudio"), name
        assert schema.category == "StyleStudio" == cls.CATEGORY, name
        assert isinstance(schema.description, str) and len(schema.description) > 40, f"{name}: description"
        assert cls.DESCRIPTION == schema.description
        assert schema.outputs, f"{name} has no outputs"
        for i, output in enumerate(schema.outputs):
            assert output.tooltip and len(output.tooltip) > 10, f"{name} output {i} has no tooltip"
        assert list(cls.OUTPUT_TOOLTIPS) == [o.tooltip for o in schema.outputs]
        ids = []
        for spec in schema.inputs:
            ids.append(spec.id)
            assert spec.tooltip and len(spec.tooltip) > 10, f"{name}.{spec.id} has no tooltip"
            opts = spec.as_dict()
            kind = spec.get_io_type()
            if kind in ("FLOAT", "INT"):
                assert opts.get("step", 1) > 0, f"{name}.{spec.id}: step"
                assert opts["min"] <= opts["default"] <= opts["max"], f"{name}.{spec.id}: default out of range"
                assert isinstance(opts["default"], float if kind == "FLOAT" else int), f"{name}.{spec.id}"
            elif kind == "BOOLEAN":
                assert isinstance(opts.get("default"), bool), f"{name}.{spec.id}: a boolean needs a default"
            elif kind == "COMBO" and "options" in opts and opts["options"] and "default" in opts:
                assert opts["default"] in opts["options"], f"{name}.{spec.id}: default not among the options"
        # the executor calls execute(**inputs): its parameters must be exactly the input ids (optional ones with
        # a default), or a workflow fails only when it runs
        params = inspect.signature(cls.execute).parameters
        assert list(params) == ids, f"{name}.execute{tuple(params)} vs inputs {ids}"
        for spec in schema.inputs:
            has_default = params[spec.id].default is not inspect.Parameter.empty
            assert has_default == bool(spec.optional), f"{name}.execute: {spec.id} optional={spec.optional}"
        cls()  # ComfyUI instantiates node classes (V3: checks define_schema/execute are overridden)


def test_core_never_imports_comfy():
    for path in (REPO / "stylestudio_core").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] not in ("comfy", "nodes", "folder_paths", "comfy_extras", "execution"), \
                    f"{path.relative_to(REPO)} imports {n}"


def test_pack_uses_relative_imports_only():
    own = {"nodes", "stylestudio_core"}
    for folder in ("nodes", "stylestudio_core"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    assert node.module.split(".")[0] not in own, f"{path}: absolute import of {node.module}"


def test_pyproject_has_registry_fields():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = data["project"], data["tool"]["comfy"]
    assert project["name"] == "comfyui-stylestudio"
    major, minor, patch = project["version"].split(".")
    assert all(p.isdigit() for p in (major, minor, patch))
    for key in ("description", "license", "requires-python"):
        assert project[key]
    assert project["urls"]["Repository"].startswith("https://")
    for key in ("PublisherId", "DisplayName", "Icon"):
        assert comfy[key]
    # the oldest supported ComfyUI (read by ComfyUI's comfy_config parser; the host tier runs exactly it)
    import re
    assert re.fullmatch(r">=\s*\d+\.\d+\.\d+", comfy["requires-comfyui"].strip()), comfy["requires-comfyui"]
    banned = ("torch", "torchvision", "numpy", "comfy")
    assert not [d for d in project.get("dependencies", []) if d.split("=")[0].split(">")[0].strip() in banned]
    assert not (REPO / "install.py").exists()
