"""The shipped workflows in the real web editor (ComfyUI's own frontend, headless Chromium).

For every workflows/*.json: the editor's own loader (``app.loadGraphData``) opens it without a missing-node
dialog, without a JS error, and with every StyleStudio node's widgets_values unchanged; a screenshot is kept;
the editor's ``app.graphToPrompt()`` equals stylestudio_cli's conversion of the same file, input by input (the
server's /object_info is the CLI's node definitions); and the file saved by the editor's own Save (the workflow
store writing the change tracker's state to the user folder) validates with ``stylestudio validate`` and converts
exactly to the editor's graphToPrompt.

Editor-made subgraphs (converted from selected nodes through the editor's ``Convert Selection to Subgraph``
command, nested, with a bypassed node inside) convert with the CLI exactly as graphToPrompt flattens them.
``STYLESTUDIO_WRITE_FIXTURES=1`` writes these editor-saved files and the editor's prompts to
tests/fixtures/editor_saved/ (the unit tier checks the CLI against them without a browser).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from _browser_env import FRONTEND_VERSION, SKIP_REASON

if SKIP_REASON:  # one line for the whole tier
    pytest.skip(SKIP_REASON, allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
WF_DIR = REPO / "workflows"
WORKFLOWS = sorted(WF_DIR.glob("*.json"))
WF_IDS = [p.stem for p in WORKFLOWS]
FIXTURES = REPO / "tests" / "fixtures" / "editor_saved"
PACK_URL = "/extensions/ComfyUI-StyleStudio/"


def _import_cli():
    """stylestudio_cli from this checkout, by path (the repository root must not go on sys.path: its `nodes`
    package would shadow ComfyUI's)."""
    if "stylestudio_cli" not in sys.modules:
        init = REPO / "stylestudio_cli" / "__init__.py"
        spec = importlib.util.spec_from_file_location("stylestudio_cli", init,
                                                      submodule_search_locations=[str(init.parent)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["stylestudio_cli"] = mod
        spec.loader.exec_module(mod)
    from stylestudio_cli import convert
    return convert


# ----------------------------------------------------------------------------------------------------------
# what the browser log may contain without it being the pack's fault (each with its reason)
# ----------------------------------------------------------------------------------------------------------
NOISE = [
    # no internet in CI: the editor asks comfy.org for release notes, the registry, templates, fonts
    (lambda e: e["source"] == "network" and "127.0.0.1" not in e["message"].split(" ")[0],
     "request to another host (no internet here)"),
    # user files the editor probes for on every start; they do not exist in a fresh user folder
    (lambda e: e["source"] == "network" and any(p in e["message"] for p in (
        "/user.css", "/api/userdata/user.css", "/favicon.ico", "/api/userdata/comfy.templates.json",
        "/api/userdata?dir=workflows", "/api/userdata?dir=subgraphs")),
     "probe for a user file that a fresh user folder does not have"),
    # ComfyUI v0.3.64 without the optional comfyui-workflow-templates / comfyui-embedded-docs packages
    (lambda e: e["source"] == "network" and any(p in e["message"] for p in ("/templates/", "/docs/")) and
     PACK_URL not in e["message"], "optional template/doc packages of ComfyUI are not installed"),
    # the frontend logs this when a script (the subgraph tests here) points the canvas at a subgraph with
    # canvas.setGraph() instead of through its router; it names no node and no pack
    (lambda e: e["source"] == "console-api" and "Attempted to cleanup event listeners for graph that was never "
     "set up" in e["message"], "the frontend's own note on script navigation into a subgraph"),
]


def _is_noise(entry) -> str | None:
    for pred, why in NOISE:
        try:
            if pred(entry):
                return why
        except (KeyError, AttributeError):
            continue
    return None


def _pack_errors(entries, phase_is_pack: bool):
    """Errors the pack caused: anything naming the pack's web files or node ids at any time, and every
    non-noise error while one of the pack's workflows was loading/converting."""
    bad = []
    for e in entries:
        if e.get("level") != "SEVERE":
            continue
        msg = e.get("message", "")
        names_pack = PACK_URL in msg or "StyleStudio" in msg
        if names_pack or (phase_is_pack and not _is_noise(e)):
            bad.append(f"[{e.get('phase')}] {e.get('source')}: {msg}")
    return bad


# ----------------------------------------------------------------------------------------------------------
# page scripts
# ----------------------------------------------------------------------------------------------------------
JS_RESET = """
  // close whatever dialog a previous step left open, start from an empty graph
  for (const b of document.querySelectorAll('.p-dialog .p-dialog-close-button')) b.click();
  window.__ssErrors = window.__ssErrors || [];
  if (!window.__ssHooked) {
    window.__ssHooked = true;
    window.addEventListener('error', e => window.__ssErrors.push(String(e.message) + ' @ ' + (e.filename||'')));
    window.addEventListener('unhandledrejection', e => window.__ssErrors.push('unhandled rejection: ' +
      String(e.reason && e.reason.stack || e.reason)));
  }
  window.__ssErrors.length = 0;
  await new Promise(r => setTimeout(r, 50));
"""

JS_STATE = """
  const dialogs = [...document.querySelectorAll('.p-dialog')].map(d => d.innerText.slice(0, 800));
  const flat = [];
  const walk = (g, path) => {
    for (const n of g.nodes) {
      flat.push({id: [...path, n.id].join(':'), type: n.type, has_errors: !!n.has_errors,
                 widgets_values: n.serialize().widgets_values ?? null,
                 widgets: (n.widgets || []).map(w => ({name: w.name, type: w.type,
                   in_values: w.serialize !== false, in_prompt: !(w.options && w.options.serialize === false)}))});
      if (n.subgraph) walk(n.subgraph, [...path, n.id]);
    }
  };
  walk(app.graph, []);
  const p = await app.graphToPrompt();
  return {dialogs, nodes: flat, output: p.output, serialized: app.graph.serialize(),
          errors: window.__ssErrors.slice()};
"""

JS_LOAD = JS_RESET + """
  const [wf, name] = args;
  await app.loadGraphData(JSON.parse(JSON.stringify(wf)), true, true, name);
  await new Promise(r => setTimeout(r, 400));   // dialogs and image previews are async
""" + JS_STATE

JS_SAVE = """
  // the editor's Save: the workflow store writes the change tracker's state to the user folder
  const [path] = args;
  const store = app.extensionManager.workflow;
  const wf = store.activeWorkflow;
  wf.changeTracker.checkState();
  if (wf.isTemporary) await store.renameWorkflow(wf, path);
  await store.saveWorkflow(wf);
  return {path: wf.path, content: wf.content};
"""

JS_SUBGRAPH = """
  // select nodes in (sub)graph `path` and run the editor's "Convert Selection to Subgraph" command
  const [path, ids] = args;
  let g = app.graph;
  for (const id of path) g = g.getNodeById(id).subgraph;
  app.canvas.setGraph(g);
  app.canvas.deselectAll();
  for (const id of ids) app.canvas.select(g.getNodeById(id));
  await app.extensionManager.command.execute('Comfy.Graph.ConvertToSubgraph');
  const node = [...app.canvas.selectedItems][0];
  app.canvas.setGraph(app.graph);
  return node.id;
"""

JS_MODE = """
  const [path, id, mode] = args;
  let g = app.graph;
  for (const p of path) g = g.getNodeById(p).subgraph;
  g.getNodeById(id).mode = mode;
  app.graph.setDirtyCanvas(true, true);
  return true;
"""


# ----------------------------------------------------------------------------------------------------------
# comparison helpers
# ----------------------------------------------------------------------------------------------------------
def _same(a, b) -> bool:
    """Strict JSON equality: a bool is not a number, 1 == 1.0 (JSON numbers)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def prompt_diff(editor: dict, cli: dict) -> list[str]:
    """Differences between two API prompts, node by node and input by input."""
    out = []
    for nid in sorted(set(editor) | set(cli), key=str):
        e, c = editor.get(nid), cli.get(nid)
        if e is None or c is None:
            which = "the editor" if e is None else "the CLI"
            node = c or e
            out.append(f"node {nid} ({node['class_type']}) is missing from {which}'s prompt")
            continue
        if e["class_type"] != c["class_type"]:
            out.append(f"node {nid}: class_type editor {e['class_type']!r} != CLI {c['class_type']!r}")
        ei, ci = e.get("inputs") or {}, c.get("inputs") or {}
        for name in list(ei) + [k for k in ci if k not in ei]:
            if name not in ci:
                out.append(f"node {nid} {e['class_type']}.{name}: editor {ei[name]!r}, CLI has no such input")
            elif name not in ei:
                out.append(f"node {nid} {e['class_type']}.{name}: CLI {ci[name]!r}, editor has no such input")
            elif not _same(ei[name], ci[name]):
                out.append(f"node {nid} {e['class_type']}.{name}: editor {ei[name]!r} != CLI {ci[name]!r}")
    return out


def defs_from_object_info(convert, object_info: dict) -> dict:
    """The CLI's node definitions from the server's /object_info (what the editor itself builds nodes from)."""
    return {name: convert.NodeDef(inputs=info.get("input") or {}, outputs=tuple(info.get("output") or ()),
                                  output_node=bool(info.get("output_node")), display_name=info.get("display_name"),
                                  input_order=info.get("input_order"))
            for name, info in object_info.items()}


# ----------------------------------------------------------------------------------------------------------
# one load per workflow, shared by the tests below
# ----------------------------------------------------------------------------------------------------------
class Editor:
    def __init__(self, server, browser, artifacts: Path):
        self.server, self.browser, self.artifacts = server, browser, artifacts
        self.cache: dict[str, dict] = {}
        self.convert = _import_cli()
        self.defs = defs_from_object_info(self.convert, server.object_info)

    def load(self, name: str, workflow: dict) -> dict:
        b = self.browser
        b.phase = "before " + name
        b.collect_log()
        b.phase = name
        state = b.run_async(JS_LOAD, workflow, name + ".json")
        state["log"] = b.collect_log()
        return state

    def shipped(self, path: Path) -> dict:
        name = path.stem
        if name not in self.cache:
            workflow = json.loads(path.read_text(encoding="utf-8"))
            state = self.load(name, workflow)
            self.browser.screenshot(self.artifacts / f"{name}.png")
            saved = self.browser.run_async(JS_SAVE, f"workflows/{name}.json")
            state["saved"] = json.loads(saved["content"])
            state["saved_path"] = saved["path"]
            (self.artifacts / f"{name}.editor-saved.json").write_text(json.dumps(state["saved"], indent=1))
            (self.artifacts / f"{name}.editor-prompt.json").write_text(json.dumps(state["output"], indent=1))
            state["workflow"] = workflow
            state["log"] += self.browser.collect_log()
            self.cache[name] = state
        return self.cache[name]

    def saved_on_server(self, path: str) -> dict:
        import requests
        r = requests.get(f"{self.server.url}/api/userdata/{urllib.parse.quote(path, safe='')}", timeout=30)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def editor(comfy_server, browser, artifacts):
    return Editor(comfy_server, browser, artifacts)


# ----------------------------------------------------------------------------------------------------------
# the shipped workflows
# ----------------------------------------------------------------------------------------------------------
def test_editor_start_up_has_no_pack_errors(editor):
    """Loading the page (every pack's web extension included) logs no error that names the pack."""
    startup = [e for e in editor.browser.page_errors if e["phase"] == "start-up"]
    assert not _pack_errors(startup, phase_is_pack=False), "\n".join(_pack_errors(startup, False))
    assert "StyleStudioCrossModalAdaIN" in editor.server.object_info
    import importlib.metadata
    assert importlib.metadata.version("comfyui-frontend-package") == FRONTEND_VERSION


@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_shipped_workflow_loads_cleanly(path, editor):
    state = editor.shipped(path)
    assert not state["dialogs"], f"{path.name}: the editor showed a dialog on load:\n" + "\n---\n".join(
        state["dialogs"])
    missing = sorted({n["type"] for n in state["nodes"] if n["has_errors"]})
    assert not missing, f"{path.name}: node types the editor does not know: {missing}"
    errors = _pack_errors(state["log"], phase_is_pack=True) + [f"window error: {e}" for e in state["errors"]]
    assert not errors, f"{path.name}: JS errors while loading:\n" + "\n".join(errors)
    # every StyleStudio node keeps exactly the widget values of the file
    by_id = {str(n["id"]): n for n in state["workflow"]["nodes"]}
    changed = []
    for n in state["nodes"]:
        if not n["type"].startswith("StyleStudio"):
            continue
        want = by_id[n["id"]]["widgets_values"]
        if not _same(want, n["widgets_values"]):
            changed.append(f"#{n['id']} {n['type']}: file {want!r} -> editor {n['widgets_values']!r}")
    assert any(n["type"].startswith("StyleStudio") for n in state["nodes"])
    assert not changed, f"{path.name}: the editor changed StyleStudio widget values:\n" + "\n".join(changed)
    assert (editor.artifacts / f"{path.stem}.png").stat().st_size > 10_000


@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_graph_to_prompt_matches_cli(path, editor):
    state = editor.shipped(path)
    conv = editor.convert.ui_to_api(state["workflow"], editor.defs)
    assert not conv.errors, "\n".join(map(str, conv.problems))
    diff = prompt_diff(state["output"], conv.prompt)
    assert not diff, f"{path.name}: editor graphToPrompt vs stylestudio_cli:\n" + "\n".join(diff)


@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_editor_saved_file_converts_like_the_editor(path, editor):
    state = editor.shipped(path)
    saved = state["saved"]
    # what the server stored is what the editor's workflow object wrote
    assert _same(editor.saved_on_server(state["saved_path"]), saved)
    conv = editor.convert.ui_to_api(saved, editor.defs)
    assert not conv.errors, f"{path.name} as the editor saved it:\n" + "\n".join(map(str, conv.problems))
    diff = prompt_diff(state["output"], conv.prompt)
    assert not diff, f"{path.name} as the editor saved it: editor vs CLI:\n" + "\n".join(diff)


def test_cli_validates_every_editor_saved_file(editor, comfy_server):
    """``stylestudio validate`` (the real CLI, ComfyUI loaded in-process with the same base folder as the
    server) accepts every file as the editor saved it, and its --api-out prompt equals graphToPrompt."""
    files = []
    for path in WORKFLOWS:
        state = editor.shipped(path)
        f = editor.artifacts / f"{path.stem}.editor-saved.json"
        files.append((path, f, state))
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("_cli_validate.py")),
                        os.environ["COMFYUI_PATH"], str(comfy_server.base)] + [str(f) for _, f, _ in files],
                       capture_output=True, text=True, timeout=600)
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(files), f"CLI run failed (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    failures = []
    for (path, f, state), res in zip(files, results):
        if res["rc"] != 0:
            failures.append(f"{path.name}: validate exited {res['rc']}:\n{res['out']}")
            continue
        diff = prompt_diff(state["output"], res["prompt"] or {})
        if diff:
            failures.append(f"{path.name}: validate's prompt differs from graphToPrompt:\n" + "\n".join(diff))
    assert not failures, "\n\n".join(failures)


# ----------------------------------------------------------------------------------------------------------
# subgraphs made by the editor
# ----------------------------------------------------------------------------------------------------------
def _ids(workflow, *types):
    return [n["id"] for n in workflow["nodes"] if n["type"] in types]


def _build(editor, source: str, steps, mutate=None) -> dict:
    """Load a shipped workflow (optionally changed first, e.g. made malformed), apply editor operations, save
    with the editor's Save; returns the editor's state (graphToPrompt output, serialised and saved graph)."""
    workflow = json.loads((WF_DIR / f"{source}.json").read_text(encoding="utf-8"))
    if mutate is not None:
        mutate(workflow)
    editor.load(source, workflow)
    ctx = {"wf": workflow}
    for step in steps:
        step(editor.browser, ctx)
    b = editor.browser
    state = b.run_async(JS_RESET + JS_STATE)
    saved = b.run_async(JS_SAVE, f"workflows/{ctx['name']}.json")
    state["saved"] = json.loads(saved["content"])
    state["loaded"] = workflow
    state["log"] = b.collect_log()
    return state


def _to_subgraph(path_key, ids_fn, key):
    def step(b, ctx):
        path = [ctx[k] for k in path_key]
        ctx[key] = b.run_async(JS_SUBGRAPH, path, ids_fn(ctx))
    return step


def _mode(path_key, id_fn, mode):
    def step(b, ctx):
        b.run_async(JS_MODE, [ctx[k] for k in path_key], id_fn(ctx), mode)
    return step


def _name(name):
    def step(b, ctx):
        ctx["name"] = name
    return step


SUBGRAPH_CASES = {
    # IPAdapter + AdaIN + teacher in one subgraph; inside it AdaIN + teacher in a nested one; AdaIN bypassed
    "sdxl_nested_subgraph_bypass": ("stylestudio_sdxl_ipadapter", [
        _name("sdxl_nested_subgraph_bypass"),
        _to_subgraph([], lambda c: _ids(c["wf"], "IPAdapterAdvanced", "StyleStudioCrossModalAdaIN",
                                         "StyleStudioTeacherLayout"), "outer"),
        _to_subgraph(["outer"], lambda c: _ids(c["wf"], "StyleStudioCrossModalAdaIN", "StyleStudioTeacherLayout"),
                     "inner"),
        _mode(["outer", "inner"], lambda c: _ids(c["wf"], "StyleStudioCrossModalAdaIN")[0], 4),
    ]),
    # one sweep branch (its KSampler, whose seed comes from the PrimitiveNode outside) as a subgraph with a
    # muted StyleStudio teacher inside; a widget input crosses the boundary
    "sweep_branch_subgraph_muted": ("stylestudio_layout_sweep", [
        _name("sweep_branch_subgraph_muted"),
        _to_subgraph([], lambda c: _sweep_branch(c["wf"]), "outer"),
        _mode(["outer"], lambda c: _sweep_branch(c["wf"], "StyleStudioTeacherLayout")[0], 2),
    ]),
    # the whole subgraph node bypassed / muted (what happens to the nodes inside is the editor's rule)
    "sdxl_subgraph_node_bypassed": ("stylestudio_sdxl_ipadapter", [
        _name("sdxl_subgraph_node_bypassed"),
        _to_subgraph([], lambda c: _ids(c["wf"], "StyleStudioCrossModalAdaIN", "StyleStudioTeacherLayout"),
                     "outer"),
        _mode([], lambda c: c["outer"], 4),
    ]),
    "sdxl_subgraph_node_muted": ("stylestudio_sdxl_ipadapter", [
        _name("sdxl_subgraph_node_muted"),
        _to_subgraph([], lambda c: _ids(c["wf"], "StyleStudioCrossModalAdaIN", "StyleStudioTeacherLayout"),
                     "outer"),
        _mode([], lambda c: c["outer"], 2),
    ]),
    # a muted PrimitiveNode still writes its value into the seeds it drives (applyToGraph ignores the mode)
    "sweep_primitive_muted": ("stylestudio_layout_sweep", [
        _name("sweep_primitive_muted"),
        _mode([], lambda c: _ids(c["wf"], "PrimitiveNode")[0], 2),
    ], lambda wf: _widgets(wf, "PrimitiveNode").__setitem__(0, 1234)),  # differs from the seeds' own 42
    # the shipped SDXL workflow, saved by the editor unchanged (LoadImage's upload widget, KSampler's control)
    "sdxl_saved_unchanged": ("stylestudio_sdxl_ipadapter", [_name("sdxl_saved_unchanged")]),
    "sd15_saved_unchanged": ("stylestudio_sd15", [_name("sd15_saved_unchanged")]),
}

# files the editor never writes but users have (hand-edited, or saved by an editor with another widget layout):
# loaded as they are; the editor assigns widgets_values by position and the CLI must do exactly the same
MALFORMED_CASES = {
    # KSampler without its control_after_generate value: everything after the seed shifts by one
    "malformed_ksampler_no_control": ("stylestudio_sd15", lambda wf: _widgets(wf, "KSampler").pop(1)),
    # the teacher's last value missing (an input added after the file was saved): the default fills it
    "malformed_teacher_short": ("stylestudio_sd15", lambda wf: _widgets(wf, "StyleStudioTeacherLayout").pop()),
    # one value too many at the end of AdaIN's values: ignored
    "malformed_adain_extra": ("stylestudio_sd15",
                              lambda wf: _widgets(wf, "StyleStudioCrossModalAdaIN").append(0.5)),
}
MALFORMED_PROBLEMS = {  # what the CLI must say about each (severity, kind, words in the message)
    "malformed_ksampler_no_control": ("error", "widget_values", "by position"),
    "malformed_teacher_short": ("warning", "widget_values", "return_teacher"),
    "malformed_adain_extra": ("warning", "widget_values", "ignored"),
}


def _widgets(workflow, ctype):
    return next(n for n in workflow["nodes"] if n["type"] == ctype)["widgets_values"]


def _sweep_branch(workflow, only: str | None = None):
    """The nodes of the first KSampler's branch of the layout sweep up to its IPAdapter (model path)."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {l[0]: l for l in workflow["links"]}
    ks = min((n for n in workflow["nodes"] if n["type"] == "KSampler"), key=lambda n: n["id"])
    chain, node = [ks["id"]], ks
    while True:
        inp = next((i for i in node["inputs"] if i["name"] == "model"), None)
        if inp is None or inp["link"] is None:
            break
        node = nodes[links[inp["link"]][1]]
        if not node["type"].startswith("StyleStudio"):
            break
        chain.append(node["id"])
    if only:
        return [i for i in chain if nodes[i]["type"] == only]
    return chain


@pytest.fixture(scope="module")
def subgraph_states(editor):
    out = {}
    for key, (source, steps, *mutate) in SUBGRAPH_CASES.items():
        out[key] = _build(editor, source, steps, *mutate)
    for key, (source, mutate) in MALFORMED_CASES.items():
        out[key] = _build(editor, source, [_name(key)], mutate)
    if os.environ.get("STYLESTUDIO_WRITE_FIXTURES"):
        FIXTURES.mkdir(parents=True, exist_ok=True)
        for key, state in out.items():
            if key in MALFORMED_CASES:  # the file as loaded, and the editor's own save of it
                (FIXTURES / f"{key}.json").write_text(json.dumps(state["loaded"], indent=1) + "\n")
                (FIXTURES / f"{key}.editor-saved.json").write_text(json.dumps(state["saved"], indent=1) + "\n")
            else:
                (FIXTURES / f"{key}.json").write_text(json.dumps(state["saved"], indent=1) + "\n")
            (FIXTURES / f"{key}.prompt.json").write_text(json.dumps(state["output"], indent=1, sort_keys=True)
                                                         + "\n")
        # the server's node definitions of every node type in them: the unit tier converts with exactly these
        used = set()
        for state in out.values():
            for n in state["nodes"]:
                used.add(n["type"])
        info = {k: v for k, v in sorted(editor.server.object_info.items()) if k in used}
        (FIXTURES / "object_info.json").write_text(json.dumps(info, indent=1) + "\n")  # key order matters
        print(f"\nwrote editor-saved fixtures to {FIXTURES}")
    return out


@pytest.mark.parametrize("key", list(MALFORMED_CASES))
def test_malformed_widget_values_line_up_as_in_the_editor(key, subgraph_states, editor):
    """The CLI lines widget values up by position exactly as the editor does, and says so."""
    state = subgraph_states[key]
    conv = editor.convert.ui_to_api(state["loaded"], editor.defs)
    diff = prompt_diff(state["output"], conv.prompt)
    assert not diff, f"{key}: editor graphToPrompt vs stylestudio_cli:\n" + "\n".join(diff)
    severity, kind, words = MALFORMED_PROBLEMS[key]
    hits = [p for p in conv.problems if p.kind == kind and p.severity == severity and words in p.message]
    assert hits, f"{key}: expected a {severity} about {words!r}, got {[str(p) for p in conv.problems]}"
    # and the editor's own save of what it loaded converts identically
    saved = editor.convert.ui_to_api(state["saved"], editor.defs)
    assert not prompt_diff(state["output"], saved.prompt)


@pytest.mark.parametrize("key", list(SUBGRAPH_CASES))
def test_editor_made_graphs_convert_like_graph_to_prompt(key, subgraph_states, editor):
    state = subgraph_states[key]
    errors = _pack_errors(state["log"], phase_is_pack=True) + [f"window error: {e}" for e in state["errors"]]
    assert not errors, "\n".join(errors)
    saved = state["saved"]
    if "subgraph" in key and "subgraph_node" not in key:
        subs = (saved.get("definitions") or {}).get("subgraphs") or []
        assert subs, "the editor did not save a subgraph definition"
        assert any(":" in k for k in state["output"]), "graphToPrompt did not flatten the subgraph"
    conv = editor.convert.ui_to_api(saved, editor.defs)
    assert not conv.errors, "\n".join(map(str, conv.problems))
    diff = prompt_diff(state["output"], conv.prompt)
    assert not diff, f"{key}: editor graphToPrompt vs stylestudio_cli:\n" + "\n".join(diff)
    if FIXTURES.is_dir() and (FIXTURES / f"{key}.json").is_file():
        # the committed fixture was made by this editor version from the same steps: same prompt
        committed = json.loads((FIXTURES / f"{key}.prompt.json").read_text())
        assert not prompt_diff(committed, state["output"]), f"{key}: the committed fixture is stale " \
            "(regenerate with STYLESTUDIO_WRITE_FIXTURES=1)"


@pytest.mark.parametrize("path", WORKFLOWS, ids=WF_IDS)
def test_cli_widget_layout_is_the_editors(path, editor):
    """For every node of the workflow, the CLI's idea of the editor's widgets (names, order, which are sent)
    is the widget list of the node in the live editor."""
    state = editor.shipped(path)
    bad = []
    for n in state["nodes"]:
        d = editor.defs.get(n["type"])
        if d is None:
            continue
        live = [(w["name"], w["in_prompt"]) for w in n["widgets"] if w["in_values"]]
        cli = [(w.name, w.in_prompt) for w in editor.convert.editor_widgets(d)]
        if live != cli:
            bad.append(f"#{n['id']} {n['type']}: editor {live} != CLI {cli}")
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------------------------------------
# in-editor help page
# ----------------------------------------------------------------------------------------------------------
HELP_NODE = "StyleStudioCrossModalAdaIN"

JS_NODE_TITLE_POINT = """
  // viewport coordinates of a node's title bar (to click it like a user)
  const [type] = args;
  const node = app.graph.nodes.find(n => n.type === type);
  app.canvas.deselectAll();
  const rect = app.canvas.canvas.getBoundingClientRect();
  const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2,
                                                         node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2]);
  const dpr = window.devicePixelRatio || 1;
  return [rect.left + cx / dpr, rect.top + cy / dpr];
"""

JS_HELP = """
  // press the selection toolbox's info button: the node library opens the selected node's help page
  const until = async (fn, ms) => { const t0 = Date.now();
    while (Date.now() - t0 < ms) { const v = fn(); if (v) return v; await new Promise(r => setTimeout(r, 100)); }
    return null; };
  const button = await until(() => document.querySelector('[data-testid="info-button"]'), 10000);
  if (!button) return {error: 'no info button in the selection toolbox (selected: ' +
    Object.keys(app.canvas.selected_nodes || {}).join(',') + ')'};
  button.click();
  const page = await until(() => {
    const md = document.querySelector('.node-help-content .markdown-content');
    if (md && md.innerText.trim()) return {markdown: md.innerText, html: md.innerHTML};
    const fb = document.querySelector('.node-help-content .fallback-content');
    if (fb) return {fallback: fb.innerText};
    return null; }, 15000);
  return page || {error: 'the help panel showed nothing within 15 s'};
"""


def test_help_panel_shows_the_pack_help_page(editor, comfy_server):
    """The editor's node-help panel (selection toolbox > info) shows web/docs/<NodeId>.md of the pack.

    How the frontend (1.27.10, nodeHelpService/nodeHelpUtil) finds it: for a node whose python_module is
    ``custom_nodes.<folder>`` it fetches ``/extensions/<folder>/docs/<NodeId>/<locale>.md``, then
    ``/extensions/<folder>/docs/<NodeId>.md``; relative links/images resolve against
    ``/extensions/<folder>/docs/``; on failure it shows the node's description and input list instead."""
    page_file = REPO / "web" / "docs" / f"{HELP_NODE}.md"
    assert page_file.is_file(), f"no help page {page_file.relative_to(REPO)} (WEB_DIRECTORY = './web' serves it)"
    info = comfy_server.object_info[HELP_NODE]
    assert info["python_module"] == "custom_nodes.ComfyUI-StyleStudio", info["python_module"]
    import requests
    r = requests.get(f"{comfy_server.url}{PACK_URL}docs/{HELP_NODE}.md", timeout=30)
    assert r.status_code == 200, f"{PACK_URL}docs/{HELP_NODE}.md: HTTP {r.status_code} (is WEB_DIRECTORY set?)"
    assert r.text == page_file.read_text(encoding="utf-8")

    workflow = json.loads((WF_DIR / "stylestudio_sdxl_ipadapter.json").read_text(encoding="utf-8"))
    editor.load("help page", workflow)
    x, y = editor.browser.run_async(JS_NODE_TITLE_POINT, HELP_NODE)
    editor.browser.click_at(x, y)
    page = editor.browser.run_async(JS_HELP)
    editor.browser.screenshot(editor.artifacts / "help_panel.png")
    assert "error" not in page, page.get("error")
    assert "markdown" in page, f"the help panel fell back to the node description:\n{page.get('fallback')}"
    heading = next(l.lstrip("#").strip() for l in page_file.read_text(encoding="utf-8").splitlines()
                   if l.startswith("#"))
    assert heading in page["markdown"], page["markdown"][:500]
    # the only request that may fail is the frontend's first probe for a per-locale page
    probe = f"{PACK_URL}docs/{HELP_NODE}/"
    log = [e for e in editor.browser.collect_log() if not (e["source"] == "network" and probe in e["message"])]
    errors = _pack_errors(log, phase_is_pack=True)
    assert not errors, "\n".join(errors)
