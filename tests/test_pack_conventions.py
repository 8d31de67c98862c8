"""Conventions every node of the pack must follow (issue: foundation). New nodes are covered automatically."""
import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pack(host):
    return host.pack()


def test_pack_exports_mappings(pack):
    assert pack.NODE_CLASS_MAPPINGS, "no nodes registered"
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)


def test_every_node_follows_the_conventions(pack):
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == "StyleStudio", name
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[name].startswith("StyleStudio"), name
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40, name
        assert hasattr(cls, cls.FUNCTION), name
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES), name
        inputs = cls.INPUT_TYPES()
        for section in inputs.values():
            for input_name, spec in section.items():
                assert len(spec) == 2 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
                if spec[0] in ("FLOAT", "INT"):
                    opts = spec[1]
                    assert opts["min"] <= opts["default"] <= opts["max"], f"{name}.{input_name}"


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
    banned = ("torch", "torchvision", "numpy", "comfy")
    assert not [d for d in project.get("dependencies", []) if d.split("=")[0].split(">")[0].strip() in banned]
    assert not (REPO / "install.py").exists()
