"""Translations (locales/<lang>/, ComfyUI's format) and the editor's node-help pages (web/docs/), issue 12.

Every registered node — found from the pack's registry, so a new node or a new input is covered the moment it
exists — must have a Simplified Chinese entry for its display name, description, every input (name and tooltip)
and every output (tooltip), and a help page in English and Chinese that documents every input. Nodes being
added on other branches (PENDING) are checked from their published contract until they are registered.

Formats, as ComfyUI v0.3.64 and its frontend 1.27 read them:
* ``locales/<lang>/main.json`` (+ ``nodeDefs.json``, merged under the key "nodeDefs") — app/custom_node_manager.py
  serves them at /i18n; the frontend looks up ``nodeDefs.<id>.display_name / description /
  inputs.<input>.name|tooltip / outputs.<index>.name|tooltip``, ``nodeCategories.<category>`` and
  ``dataTypes.<TYPE>`` (an output whose name is its type is labelled by dataTypes).
* help: the node-help panel fetches ``/extensions/<pack folder>/docs/<id>/<locale>.md`` and falls back to
  ``docs/<id>.md``; relative image links resolve against ``/extensions/<pack folder>/docs/``.
"""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCALES = REPO / "locales"
DOCS = REPO / "web" / "docs"
LANGS = ("zh",)
CJK = re.compile(r"[\u4e00-\u9fff]")

#: Nodes of issue 13 (StyleStudio Style Adapter Loader / Apply Style Adapter) being added on another branch:
#: {id: (input ids, output types)}, their contract. Once registered they are checked from their real schema.
PENDING = {
    "StyleStudioStyleAdapterLoader": (["adapter_name"], ["STYLE_ADAPTER"]),
    "StyleStudioApplyStyleAdapter": (["model", "style_adapter", "clip_vision", "image", "weight", "blocks",
                                      "start_at", "end_at", "image_negative", "attn_mask"], ["MODEL"]),
}
#: socket types ComfyUI's frontend already translates (its own dataTypes); others need a main.json entry
CORE_TYPES = {"MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "CLIP_VISION", "INT", "FLOAT",
              "BOOLEAN", "STRING", "COMBO"}


def _load(lang: str, name: str) -> dict:
    path = LOCALES / lang / name
    assert path.is_file(), f"{path} is missing"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def registry(host):
    return importlib.import_module(host.pack().__name__ + ".nodes")


@pytest.fixture(scope="module")
def contracts(registry) -> dict:
    """{node id: (input ids, output types)} of every registered node, plus PENDING ones."""
    out = {}
    for cls in registry.NODES:
        schema = cls.GET_SCHEMA()
        out[schema.node_id] = ([i.id for i in schema.inputs], [str(o.io_type) for o in schema.outputs])
    for node_id, contract in PENDING.items():
        out.setdefault(node_id, contract)
    return out


@pytest.mark.parametrize("lang", LANGS)
def test_every_node_input_and_output_is_translated(contracts, lang):
    defs = _load(lang, "nodeDefs.json")
    problems = []
    for node_id, (inputs, outputs) in contracts.items():
        entry = defs.get(node_id)
        if not isinstance(entry, dict):
            problems.append(f"{node_id}: no entry")
            continue
        for key in ("display_name", "description"):
            if not CJK.search(entry.get(key) or ""):
                problems.append(f"{node_id}.{key}: missing or untranslated")
        for name in inputs:
            spec = entry.get("inputs", {}).get(name.replace(".", "_")) or {}
            if not (spec.get("name") or "").strip():
                problems.append(f"{node_id}.inputs.{name}.name missing")
            if not CJK.search(spec.get("tooltip") or ""):
                problems.append(f"{node_id}.inputs.{name}.tooltip missing or untranslated")
        for index in range(len(outputs)):
            spec = entry.get("outputs", {}).get(str(index)) or {}
            if not CJK.search(spec.get("tooltip") or ""):
                problems.append(f"{node_id}.outputs.{index}.tooltip missing or untranslated")
            if not (spec.get("name") or "").strip():
                problems.append(f"{node_id}.outputs.{index}.name missing")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lang", LANGS)
def test_no_stale_translations(contracts, lang):
    """An entry for an input or node that no longer exists means a rename slipped past the translators."""
    defs = _load(lang, "nodeDefs.json")
    stale = [n for n in defs if n not in contracts]
    for node_id, entry in defs.items():
        if node_id in contracts:
            inputs, outputs = contracts[node_id]
            stale += [f"{node_id}.inputs.{i}" for i in entry.get("inputs", {}) if i not in inputs]
            stale += [f"{node_id}.outputs.{o}" for o in entry.get("outputs", {})
                      if not (o.isdigit() and int(o) < len(outputs))]
    assert not stale, stale


@pytest.mark.parametrize("lang", LANGS)
def test_main_json_has_the_category_and_the_pack_types(contracts, lang):
    main = _load(lang, "main.json")
    assert "nodeDefs" not in main, "node translations belong in nodeDefs.json (ComfyUI merges it under nodeDefs)"
    assert main.get("nodeCategories", {}).get("StyleStudio")
    own_types = {t for _inputs, outputs in contracts.values() for t in outputs if t not in CORE_TYPES}
    assert "STYLE_ADAPTER" in own_types
    missing = [t for t in own_types if not CJK.search(main.get("dataTypes", {}).get(t, ""))]
    assert not missing, f"main.json dataTypes lacks {missing}"


# --- help pages --------------------------------------------------------------------------------------------------
def _pages(node_id: str) -> dict:
    return {"en": DOCS / f"{node_id}.md", **{lang: DOCS / node_id / f"{lang}.md" for lang in LANGS}}


def test_every_node_has_a_help_page_per_language_documenting_every_input(contracts):
    problems = []
    for node_id, (inputs, _outputs) in contracts.items():
        for lang, page in _pages(node_id).items():
            if not page.is_file():
                problems.append(f"{page.relative_to(REPO)} is missing")
                continue
            text = page.read_text(encoding="utf-8")
            if not text.startswith("# "):
                problems.append(f"{page.name} ({lang}): no title")
            for name in inputs:
                if f"`{name}`" not in text:
                    problems.append(f"{node_id} ({lang}): input `{name}` is not documented")
            if "SD1.5" not in text or "SDXL" not in text:
                problems.append(f"{node_id} ({lang}): no starting values per base model (SD1.5 / SDXL)")
            if "IPAdapter" not in text:
                problems.append(f"{node_id} ({lang}): nothing on combining with IPAdapter nodes")
            if lang != "en" and len(CJK.findall(text)) < 200:
                problems.append(f"{node_id} ({lang}): not translated")
            images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", text) + re.findall(r"<img[^>]*\ssrc=['\"]([^'\"]+)", text)
            if not images:
                problems.append(f"{node_id} ({lang}): no diagram or image")
            for src in images:
                # the panel resolves relative links against /extensions/<pack>/docs/ for every locale's page
                if src.startswith(("/", "http://", "https://")) or not (DOCS / src).is_file():
                    problems.append(f"{node_id} ({lang}): image {src} is not a file under web/docs/")
    assert not problems, "\n".join(problems)


def test_images_are_well_formed():
    import xml.dom.minidom
    images = list(DOCS.rglob("*.svg")) + list(DOCS.rglob("*.png"))
    assert images
    for path in images:
        if path.suffix == ".svg":
            root = xml.dom.minidom.parse(str(path)).documentElement
            assert root.tagName == "svg" and root.getAttribute("viewBox"), path
            assert "<script" not in path.read_text(encoding="utf-8").lower(), path  # the panel sanitises it anyway
        else:
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_the_pack_serves_its_web_directory(host):
    pack = host.pack()
    assert (REPO / pack.WEB_DIRECTORY).resolve() == (REPO / "web").resolve()
    # every file under web/ is served to every browser and every .js there is run as a frontend extension
    assert not list((REPO / "web").rglob("*.js")), "web/ holds help pages only"


# --- host tier: ComfyUI's own loaders ------------------------------------------------------------------------------
def test_comfyui_serves_the_translations(host, contracts):
    if host.name != "comfyui":
        pytest.skip("host tier: set COMFYUI_PATH=/path/to/ComfyUI to check ComfyUI's /i18n builder")
    from app.custom_node_manager import CustomNodeManager
    translations = CustomNodeManager().build_translations()
    zh = translations["zh"]
    for node_id, (inputs, _outputs) in contracts.items():
        assert zh["nodeDefs"][node_id]["display_name"], node_id
        assert set(inputs) <= set(zh["nodeDefs"][node_id]["inputs"]), node_id
    assert zh["nodeCategories"]["StyleStudio"] and zh["dataTypes"]["STYLE_ADAPTER"]
