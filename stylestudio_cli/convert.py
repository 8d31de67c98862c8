"""UI-format workflow (what the graph editor saves) -> API-format prompt (what ComfyUI executes).

Pure Python, no ComfyUI import: the node definitions are passed in as ``{class_type: NodeDef}`` (built from the
live ``nodes.NODE_CLASS_MAPPINGS`` by :mod:`stylestudio_cli.comfy_env`, or by hand in tests).

What the conversion follows: the editor's own ``app.graphToPrompt()`` (ComfyUI frontend 1.27, read from its
sources and checked against the live editor by tests/browser):

* Widgets: the editor creates one widget per widget input (INT, FLOAT, STRING, BOOLEAN, combo; not forceInput)
  in the server's ``input_order``; seed-like INTs (``control_after_generate`` or named seed/noise_seed) get a
  "control_after_generate" widget after them, combos with ``control_after_generate`` a control and a filter
  widget; an upload combo (``image_upload`` ...) gets an ``upload`` input slot (IMAGEUPLOAD) and button at the
  end. ``widgets_values`` holds one value per widget and the editor assigns them **by position** (after its
  ``migrateWidgetsValues`` drops stored forceInput values when the count says so). The CLI does the same, and
  reports what happened when the values do not fit: an error when a value lands in a widget of another kind
  (a renamed, added, removed or reordered input: the editor shifts the values), a warning for missing (default
  used) or extra (ignored) values. Editor-only widgets (control, filter, upload) are never sent.
* Links become ``[origin_id, origin_slot]``. A **bypassed** node (mode 4) passes the link through to its input
  of the matching type (same slot first, then the first exact type, then the first compatible one); a link from
  a **muted** node (mode 2) removes the input, widget value included; **Reroute** nodes are followed;
  **PrimitiveNode** values are written into the widget they drive; **Note**/**MarkdownNote** are dropped. A
  widget input whose link resolves to nothing keeps its widget value.
* **Subgraphs** (``definitions.subgraphs``, nested ones included) are flattened: a node inside subgraph node
  ``5`` is sent as ``"5:<id>"`` (``"5:9:<id>"`` one level deeper); links through the subgraph's input node
  (origin -10) continue at the subgraph node's input outside, or take the value of the widget the editor
  promotes onto the subgraph node (its ``widgets_values``); outputs (target -20) continue at the inner node that
  feeds them; bypass and mute inside work as above. Muting or bypassing the subgraph node itself does not stop
  the nodes inside from being sent (the editor's behaviour, reproduced and reported as a warning).
* Array widget values are wrapped as ``{"__value__": [...]}`` (arrays mean links in the API format).
* Group nodes (``workflow>...``, the editor's older grouping) are reported as unsupported.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

__all__ = [
    "NodeDef", "Problem", "Conversion", "ui_to_api", "check_links", "is_api_format", "load_workflow",
    "widget_inputs", "node_defs_from_mappings", "pack_hint", "VIRTUAL_NODE_TYPES", "MODE_MUTED", "MODE_BYPASS",
]

MODE_MUTED = 2   # LGraphEventMode.NEVER: "Mute"
MODE_BYPASS = 4  # "Bypass"

#: editor-only node types: never sent to the server
VIRTUAL_NODE_TYPES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "file_upload")
#: the flags for which the editor's Comfy.UploadImage extension adds an ``upload`` button input
MEDIA_UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")


# ----------------------------------------------------------------------------------------------------------
# data types
# ----------------------------------------------------------------------------------------------------------
@dataclass
class NodeDef:
    """What the converter needs to know about a node class: ``INPUT_TYPES()`` and ``RETURN_TYPES``."""
    inputs: Mapping[str, Any]
    outputs: tuple = ()
    output_node: bool = False
    display_name: str | None = None
    #: ``{"required": [names], "optional": [names]}`` as the server's /object_info gives it (the editor lays
    #: widgets out in this order when present)
    input_order: Mapping[str, Any] | None = None

    def input_spec(self, name: str):
        for cat in ("required", "optional"):
            section = self.inputs.get(cat) or {}
            if name in section:
                return section[name], cat
        return None, None

    def input_names(self) -> list[str]:
        return [n for cat in ("required", "optional") for n in (self.inputs.get(cat) or {})]


@dataclass
class Problem:
    severity: str            # "error" | "warning"
    kind: str                # unknown_node, broken_link, type_mismatch, widget_values, missing_model, ...
    message: str
    node_id: str | None = None
    node: str | None = None  # human label: '#10 KSampler "Sampler"'
    input: str | None = None

    def __str__(self) -> str:
        where = f"{self.node}: " if self.node else ""
        return f"{self.severity}: {where}{self.message}"


@dataclass
class Conversion:
    prompt: dict                                  # API format {id: {class_type, inputs, _meta}}
    problems: list = field(default_factory=list)  # list[Problem]
    labels: dict = field(default_factory=dict)    # node id -> human label
    #: (node_id, input) -> why a linked input was left out of the prompt (muted origin, unknown origin, ...)
    dropped: dict = field(default_factory=dict)
    #: ids of nodes left out because their class is unknown (or unsupported)
    unknown: set = field(default_factory=set)

    @property
    def errors(self) -> list:
        return [p for p in self.problems if p.severity == "error"]


def node_defs_from_mappings(class_mappings: Mapping[str, Any], display_names: Mapping[str, str] | None = None,
                            only: Iterable[str] | None = None) -> dict[str, NodeDef]:
    """NodeDefs from ``NODE_CLASS_MAPPINGS``-style ``{name: class}`` (V1 classes and V3 ``io.ComfyNode`` both
    provide ``INPUT_TYPES()`` / ``RETURN_TYPES``)."""
    names = list(class_mappings) if only is None else [n for n in only if n in class_mappings]
    out = {}
    for name in names:
        cls = class_mappings[name]
        out[name] = NodeDef(inputs=cls.INPUT_TYPES(), outputs=tuple(getattr(cls, "RETURN_TYPES", ()) or ()),
                            output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
                            display_name=(display_names or {}).get(name))
    return out


def pack_hint(class_type: str) -> str | None:
    """Which (known) pack provides a node type."""
    if class_type.startswith("StyleStudio"):
        return ("ComfyUI-StyleStudio (this pack): put it in ComfyUI/custom_nodes, or pass "
                "--extra-custom-nodes /path/to/ComfyUI-StyleStudio")
    if class_type.startswith(("IPAdapter", "IPAAdapter")) or class_type == "PrepImageForClipVision":
        return ("ComfyUI_IPAdapter_plus (https://github.com/cubiq/ComfyUI_IPAdapter_plus): put it in "
                "ComfyUI/custom_nodes, or pass --extra-custom-nodes /path/to/ComfyUI_IPAdapter_plus")
    return None


# ----------------------------------------------------------------------------------------------------------
# reading workflows
# ----------------------------------------------------------------------------------------------------------
def is_api_format(data: Any) -> bool:
    return (isinstance(data, dict) and "nodes" not in data and bool(data)
            and all(isinstance(v, dict) and "class_type" in v for v in data.values()))


def load_workflow(path: str) -> dict:
    """A workflow JSON file (UI or API format; a ``{"workflow": ...}`` wrapper is unwrapped)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "nodes" not in data and isinstance(data.get("workflow"), dict) \
            and "nodes" in data["workflow"]:
        data = data["workflow"]
    if not isinstance(data, dict) or not ("nodes" in data or is_api_format(data)):
        raise ValueError(f"{path}: not a ComfyUI workflow (neither UI format with 'nodes' nor API format)")
    return data


def _links_table(workflow: dict) -> tuple[dict, list]:
    """{link_id: (origin_id, origin_slot, target_id, target_slot, type)} and problems with the table itself.
    Accepts the array form ``[id, from, from_slot, to, to_slot, type]`` and the object form."""
    table, problems = {}, []
    for raw in workflow.get("links") or []:
        if isinstance(raw, dict):
            try:
                lid = raw["id"]
                entry = (str(raw["origin_id"]), int(raw["origin_slot"]), str(raw["target_id"]),
                         int(raw["target_slot"]), raw.get("type"))
            except (KeyError, TypeError, ValueError):
                problems.append(Problem("error", "broken_link", f"malformed link entry {raw!r}"))
                continue
        else:
            if not isinstance(raw, (list, tuple)) or len(raw) < 5:
                problems.append(Problem("error", "broken_link", f"malformed link entry {raw!r}"))
                continue
            lid = raw[0]
            try:
                entry = (str(raw[1]), int(raw[2]), str(raw[3]), int(raw[4]), raw[5] if len(raw) > 5 else None)
            except (TypeError, ValueError):
                problems.append(Problem("error", "broken_link", f"malformed link entry {raw!r}"))
                continue
        if lid in table:
            problems.append(Problem("error", "broken_link", f"link id {lid} appears twice in the links table"))
        table[lid] = entry
    return table, problems


def _types_compatible(a: Any, b: Any) -> bool:
    """The graph editor's slot-type rule: equal, a wildcard on either side, or overlapping comma lists."""
    if a in (None, "", "*", 0) or b in (None, "", "*", 0):
        return True
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):  # combo output -> combo input
        return True
    a, b = str(a).upper(), str(b).upper()
    if a == b:
        return True
    return bool(set(a.split(",")) & set(b.split(",")))


def _node_label(node: dict) -> str:
    ntype = node.get("type", "?")
    title = node.get("title")
    label = f"#{node.get('id')} {ntype}"
    if title and title != ntype:
        label += f' "{title}"'
    return label


# ----------------------------------------------------------------------------------------------------------
# structural checks (no node definitions needed)
# ----------------------------------------------------------------------------------------------------------
def check_links(workflow: dict) -> list[Problem]:
    """Consistency of the links table with every node's inputs/outputs: ids, slots, back-references, types."""
    problems: list[Problem] = []
    nodes: dict[str, dict] = {}
    for node in workflow.get("nodes") or []:
        nid = str(node.get("id"))
        if nid in nodes:
            problems.append(Problem("error", "broken_link", f"node id {nid} is used twice", nid))
        nodes[nid] = node
    table, table_problems = _links_table(workflow)
    problems += table_problems

    for lid, (oid, oslot, tid, tslot, ltype) in table.items():
        origin, target = nodes.get(oid), nodes.get(tid)
        if origin is None or target is None:
            missing = oid if origin is None else tid
            problems.append(Problem("error", "broken_link",
                                    f"link {lid} ({oid}:{oslot} -> {tid}:{tslot}) refers to node {missing}, which "
                                    "is not in the workflow"))
            continue
        outs, ins = origin.get("outputs") or [], target.get("inputs") or []
        if not 0 <= oslot < len(outs):
            problems.append(Problem("error", "broken_link", f"link {lid} starts at output slot {oslot}, which "
                                    f"does not exist ({len(outs)} outputs)", oid, _node_label(origin)))
            continue
        if not 0 <= tslot < len(ins):
            problems.append(Problem("error", "broken_link", f"link {lid} ends at input slot {tslot}, which does "
                                    f"not exist ({len(ins)} inputs)", tid, _node_label(target)))
            continue
        out, inp = outs[oslot], ins[tslot]
        if inp.get("link") != lid:
            problems.append(Problem("error", "broken_link",
                                    f"link {lid} ends at input '{inp.get('name')}', but that input records link "
                                    f"{inp.get('link')}", tid, _node_label(target), inp.get("name")))
        if lid not in (out.get("links") or []):
            problems.append(Problem("error", "broken_link",
                                    f"link {lid} starts at output '{out.get('name')}', but that output does not list "
                                    "it", oid, _node_label(origin)))
        if not _types_compatible(out.get("type"), inp.get("type")) or \
                not _types_compatible(ltype, inp.get("type")) or not _types_compatible(ltype, out.get("type")):
            problems.append(Problem("error", "type_mismatch",
                                    f"link {lid} connects output '{out.get('name')}' ({out.get('type')}) of "
                                    f"{_node_label(origin)} to input '{inp.get('name')}' ({inp.get('type')}) "
                                    f"with link type {ltype}", tid, _node_label(target), inp.get("name")))

    for nid, node in nodes.items():
        for i, inp in enumerate(node.get("inputs") or []):
            lid = inp.get("link")
            if lid is None:
                continue
            entry = table.get(lid)
            if entry is None:
                problems.append(Problem("error", "broken_link", f"input '{inp.get('name')}' uses link {lid}, which "
                                        "is not in the links table", nid, _node_label(node), inp.get("name")))
            elif entry[2] != nid or entry[3] != i:
                problems.append(Problem("error", "broken_link",
                                        f"input '{inp.get('name')}' (slot {i}) uses link {lid}, but that link ends "
                                        f"at node {entry[2]} slot {entry[3]}", nid, _node_label(node), inp.get("name")))
        for i, out in enumerate(node.get("outputs") or []):
            for lid in out.get("links") or []:
                entry = table.get(lid)
                if entry is None:
                    problems.append(Problem("error", "broken_link", f"output '{out.get('name')}' lists link {lid}, "
                                            "which is not in the links table", nid, _node_label(node)))
                elif entry[0] != nid or entry[1] != i:
                    problems.append(Problem("error", "broken_link",
                                            f"output '{out.get('name')}' (slot {i}) lists link {lid}, but that link "
                                            f"starts at node {entry[0]} slot {entry[1]}", nid, _node_label(node)))
    ids = [int(n) for n in nodes if n.lstrip("-").isdigit()]
    if ids and isinstance(workflow.get("last_node_id"), int) and workflow["last_node_id"] < max(ids):
        problems.append(Problem("warning", "broken_link", f"last_node_id {workflow['last_node_id']} is below the "
                                f"highest node id {max(ids)} (the editor may reuse ids)"))
    lids = [l for l in table if isinstance(l, int)]
    if lids and isinstance(workflow.get("last_link_id"), int) and workflow["last_link_id"] < max(lids):
        problems.append(Problem("warning", "broken_link", f"last_link_id {workflow['last_link_id']} is below the "
                                f"highest link id {max(lids)}"))
    return problems


# ----------------------------------------------------------------------------------------------------------
# widgets
# ----------------------------------------------------------------------------------------------------------
def _classify(spec) -> tuple[str | None, dict]:
    if not isinstance(spec, (list, tuple)) or not spec:
        return None, {}
    t = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(t, (list, tuple)):
        return "COMBO", {**opts, "options": list(t)}
    if t == "COMBO":  # V3 style: ("COMBO", {"options": [...]}); options may come from elsewhere (remote)
        return "COMBO", {**opts, "options": list(opts.get("options") or []), "_v3_combo": True}
    if t in WIDGET_TYPES:
        return t, dict(opts)
    return None, dict(opts)


def _ordered_inputs(node_def: NodeDef) -> list[tuple[str, Any, str]]:
    """``[(name, spec, category)]`` in the order the editor creates sockets and widgets: the server's
    ``input_order`` (required, then optional) when known, else ``INPUT_TYPES`` order; anything else after."""
    out, seen = [], set()
    order = node_def.input_order or {}
    for cat in ("required", "optional"):
        section = node_def.inputs.get(cat) or {}
        for name in order.get(cat) or []:
            if name in section and name not in seen:
                out.append((name, section[name], cat))
                seen.add(name)
    for cat in ("required", "optional"):
        for name, spec in (node_def.inputs.get(cat) or {}).items():
            if name not in seen:
                out.append((name, spec, cat))
                seen.add(name)
    return out


def widget_inputs(node_def: NodeDef) -> list[tuple[str, str, dict]]:
    """``[(name, kind, options)]`` of the inputs the graph editor shows as widgets, in widget order."""
    out = []
    for name, spec, _cat in _ordered_inputs(node_def):
        kind, opts = _classify(spec)
        if kind is not None and not opts.get("forceInput"):
            out.append((name, kind, opts))
    return out


@dataclass
class EditorWidget:
    """One widget as the editor (ComfyUI frontend 1.27) creates it on a node of this definition."""
    name: str
    kind: str            # INT FLOAT STRING BOOLEAN COMBO | CONTROL (seed control) | FILTER | UPLOAD (button)
    opts: dict
    in_prompt: bool      # graphToPrompt sends it (False: widget.options.serialize === false)
    for_input: str       # the input it belongs to


def _upload_input(node_def: NodeDef) -> str | None:
    """The combo the editor's Comfy.UploadImage extension gives an ``upload`` button (the first required combo
    with image_upload / video_upload / animated_image_upload)."""
    for name, spec in (node_def.inputs.get("required") or {}).items():
        kind, opts = _classify(spec)
        if kind == "COMBO" and any(opts.get(k) is True for k in MEDIA_UPLOAD_FLAGS):
            return name
    return None


def editor_widgets(node_def: NodeDef) -> list[EditorWidget]:
    """The widgets the editor puts on a node, in order; ``widgets_values`` holds one value per widget.

    From the frontend's sources (litegraphService ``#addInputs``, ``useIntWidget``/``useComboWidget``,
    ``addValueControlWidgets``, the Comfy.UploadImage extension): one widget per widget input (forceInput ones
    have none); an INT with ``control_after_generate`` or named seed/noise_seed is followed by its
    "control_after_generate" combo, a combo with ``control_after_generate`` by the control combo and a filter
    text (neither is sent); an upload combo gets an ``upload`` input (type IMAGEUPLOAD) added after all other
    inputs, whose button widget holds the value "image" and is not sent either."""
    out = []
    for name, kind, opts in widget_inputs(node_def):
        out.append(EditorWidget(name, kind, opts, True, name))
        if kind == "INT" and (opts.get("control_after_generate") or name in SEED_NAMES):
            out.append(EditorWidget(_control_name(opts), "CONTROL", {}, False, name))
        elif kind == "COMBO" and opts.get("control_after_generate"):
            out.append(EditorWidget(_control_name(opts), "CONTROL", {}, False, name))
            out.append(EditorWidget("control_filter_list", "FILTER", {}, False, name))
    upload = _upload_input(node_def)
    if upload is not None:
        out.append(EditorWidget("upload", "UPLOAD", {}, False, "upload"))
    return out


def _control_name(opts: dict) -> str:
    name = opts.get("control_after_generate")
    return name if isinstance(name, str) else "control_after_generate"


def _editor_extra_inputs(node_def: NodeDef) -> set[str]:
    """Input slots the editor adds to a node that are not inputs of the node class (never sent)."""
    return {"upload"} if _upload_input(node_def) is not None else set()


def _fits(kind: str, value: Any) -> bool:
    if kind == "INT":
        return (isinstance(value, int) and not isinstance(value, bool)) or \
            (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if kind == "FLOAT":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "STRING":
        return isinstance(value, str)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "COMBO":
        return value is None or isinstance(value, (str, int, float, bool, list))
    if kind == "CONTROL":
        return value in CONTROL_VALUES or value == "increment-wrap"
    if kind in ("UPLOAD", "FILTER"):
        return value is None or isinstance(value, str)
    return False


def _default_for(kind: str, opts: dict):
    if "default" in opts:
        return opts["default"]
    if kind == "COMBO":
        return (opts.get("options") or [None])[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False, "CONTROL": "randomize",
            "UPLOAD": "image", "FILTER": ""}.get(kind)


def _migrated_values(node_def: NodeDef, values: list) -> list:
    """The frontend's ``migrateWidgetsValues``: files from editors that stored a value for forceInput inputs
    too lose those values when the count matches that layout exactly."""
    counted = []
    for name, spec, _cat in _ordered_inputs(node_def):
        kind, opts = _classify(spec)
        if kind is None:
            continue
        counted.append((name, opts, 2 if (opts.get("control_after_generate") or name in SEED_NAMES) else 1))
    if not any(opts.get("forceInput") for _n, opts, _c in counted):
        return values
    upload = 1 if _upload_input(node_def) is not None else 0
    if sum(c for _n, _o, c in counted) + upload != len(values):
        return values
    out, i = [], 0
    for _name, opts, c in counted:
        if not opts.get("forceInput"):
            out.extend(values[i:i + c])
        i += c
    return out + values[i:]


def editor_widget_values(node: dict, node_def: NodeDef, label: str, nid: str, problems: list) -> dict:
    """``{widget name: value}`` as the editor holds them after loading the node (what graphToPrompt sends
    for the widgets that are sent). The editor assigns ``widgets_values`` to its widgets strictly by position;
    when the count or a value's kind does not fit the layout, the result is reported, not re-aligned."""
    values = node.get("widgets_values")
    widgets = editor_widgets(node_def)
    if values is None:
        values = []
    if isinstance(values, dict):  # some packs save {name: value}
        names = {w.name for w in widgets if w.in_prompt}
        return {k: v for k, v in values.items() if k in names}
    values = _migrated_values(node_def, list(values))
    ctype = node.get("type")
    out: dict[str, Any] = {}
    misfits = []
    for i, w in enumerate(widgets):
        if i < len(values):
            v = values[i]
            if not _fits(w.kind, v):
                misfits.append(f"{w.name} ({w.kind}) <- {v!r}")
        else:
            v = _default_for(w.kind, w.opts)
        if w.in_prompt:
            out[w.name] = v
    layout = [f"{w.name}:{w.kind}" for w in widgets]
    n_w, n_v = len(widgets), len(values)
    if misfits:
        shift = "" if n_w == n_v else f" ({n_v} values for {n_w} widgets)"
        problems.append(Problem("error", "widget_values",
                                f"widgets_values {values!r} do not fit the widgets of {ctype} {layout}{shift}: the "
                                f"editor assigns them by position, which gives {'; '.join(misfits)} (was an input "
                                "renamed, added, removed or reordered? re-enter these values in the editor)",
                                nid, label))
    elif n_v > n_w:
        problems.append(Problem("warning", "widget_values",
                                f"{n_v - n_w} widget value(s) at the end of widgets_values match no widget of "
                                f"{ctype} and are ignored (as the editor ignores them): {values[n_w:]!r}", nid, label))
    elif n_v < n_w:
        missing = [w for w in widgets[n_v:]]
        sent = [f"{w.name} = {_default_for(w.kind, w.opts)!r}" for w in missing if w.in_prompt]
        problems.append(Problem("warning", "widget_values",
                                f"widgets_values has no value for {', '.join(w.name for w in missing)} (an input "
                                f"added to {ctype} after the workflow was saved?); the editor uses the default"
                                + (f": {', '.join(sent)}" if sent else ""), nid, label))
    return out


# ----------------------------------------------------------------------------------------------------------
# conversion (the editor's graphToPrompt: ExecutableNodeDTO.resolveInput / resolveOutput, subgraphs flattened)
# ----------------------------------------------------------------------------------------------------------
SUBGRAPH_INPUT_ID = -10   # the subgraph's input node in its links (origin_id)
SUBGRAPH_OUTPUT_ID = -20  # the subgraph's output node in its links (target_id)


class _Scope:
    """One graph level: the root workflow, or one subgraph instance (definition + where it sits)."""

    def __init__(self, graph: dict, path: tuple, instance: tuple | None = None):
        self.graph = graph
        self.path = path                  # ids of the subgraph nodes from the root down to this level
        self.instance = instance          # (subgraph node dict, parent _Scope) or None at the root
        self.nodes: dict[str, dict] = {}
        for node in graph.get("nodes") or []:
            self.nodes.setdefault(str(node.get("id")), node)
        self.links, _ = _links_table(graph)

    def exec_id(self, nid) -> str:
        return ":".join([*map(str, self.path), str(nid)])


def _collect_subgraphs(workflow: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}

    def walk(defs_holder, depth=0):
        if depth > 32:
            return
        for sg in ((defs_holder.get("definitions") or {}).get("subgraphs") or []):
            if isinstance(sg, dict) and sg.get("id") is not None and str(sg["id"]) not in out:
                out[str(sg["id"])] = sg
                walk(sg, depth + 1)
    walk(workflow)
    return out


class _Resolver:
    def __init__(self, defs: Mapping[str, NodeDef], subgraphs: Mapping[str, dict]):
        self.defs, self.subgraphs = defs, subgraphs

    def is_subgraph(self, node: dict) -> bool:
        return str(node.get("type")) in self.subgraphs

    def inner_scope(self, scope: _Scope, node: dict) -> _Scope:
        return _Scope(self.subgraphs[str(node.get("type"))], scope.path + (str(node.get("id")),), (node, scope))

    def resolve_input(self, scope: _Scope, node: dict, slot: int, target_type, visited: set):
        """('link', [exec id, slot]) | ('value', v) | ('none', reason) | ('drop', reason)

        'none' = nothing resolved (a widget input keeps its widget value); 'drop' = the editor resolves to a node
        it does not send (muted), so the input is removed from the prompt altogether."""
        key = ("I", scope.path, str(node.get("id")), slot)
        if key in visited:
            return "none", f"circular reference at {_node_label(node)}"
        visited.add(key)
        inputs = node.get("inputs") or []
        if not 0 <= slot < len(inputs):
            return "none", f"{_node_label(node)} has no input slot {slot}"
        lid = inputs[slot].get("link")
        if lid is None:
            return "none", f"nothing is connected to input '{inputs[slot].get('name')}' of {_node_label(node)}"
        entry = scope.links.get(lid)
        if entry is None:
            return "none", f"link {lid} is missing from the links table"
        want = target_type if target_type not in (None, "") else inputs[slot].get("type")
        if scope.instance is not None and entry[0] == str(SUBGRAPH_INPUT_ID):
            sg_node, parent = scope.instance
            sg_inputs = sg_node.get("inputs") or []
            if not 0 <= entry[1] < len(sg_inputs):
                return "none", f"subgraph {_node_label(sg_node)} has no input slot {entry[1]}"
            if sg_inputs[entry[1]].get("link") is None:
                found, value = self.promoted_value(scope, sg_node, entry[1])
                if found:
                    return "value", value
                return "none", f"nothing is connected to input '{sg_inputs[entry[1]].get('name')}' of subgraph " \
                               f"{_node_label(sg_node)}"
            return self.resolve_input(parent, sg_node, entry[1], None, visited)
        origin = scope.nodes.get(entry[0])
        if origin is None:
            return "none", f"node {entry[0]} does not exist"
        return self.resolve_output(scope, origin, entry[1], want, visited)

    def resolve_output(self, scope: _Scope, node: dict, slot: int, target_type, visited: set):
        key = ("O", scope.path, str(node.get("id")), slot)
        if key in visited:
            return "none", f"circular pass-through at {_node_label(node)}"
        visited.add(key)
        ntype = node.get("type")
        mode = node.get("mode", 0)
        if mode == MODE_BYPASS:
            idx = self._bypass_slot(node, slot, target_type)
            if idx < 0:
                return "none", f"bypassed {_node_label(node)} has no input of type {target_type} to pass through"
            return self.resolve_input(scope, node, idx, None, visited)
        if self.is_subgraph(node):
            inner = self.inner_scope(scope, node)
            for lid, (oid, oslot, tid, tslot, _t) in inner.links.items():
                if tid == str(SUBGRAPH_OUTPUT_ID) and tslot == slot:
                    origin = inner.nodes.get(oid)
                    if origin is None:
                        return "none", f"subgraph {_node_label(node)}: node {oid} does not exist"
                    return self.resolve_output(inner, origin, oslot, target_type, visited)
            return "none", f"nothing inside subgraph {_node_label(node)} is connected to its output {slot}"
        if ntype == "PrimitiveNode":
            wv = node.get("widgets_values")
            if isinstance(wv, list) and wv:
                return "value", wv[0]
            return "none", f"{_node_label(node)} has no value"
        if ntype in VIRTUAL_NODE_TYPES:  # Reroute (Notes have no outputs)
            if 0 <= slot < len(node.get("inputs") or []):
                return self.resolve_input(scope, node, slot, target_type, visited)
            return "none", f"{_node_label(node)} passes nothing through"
        if mode == MODE_MUTED:
            return "drop", f"it comes from muted {_node_label(node)}"
        if ntype not in self.defs:
            return "none", f"it comes from {_node_label(node)}, whose node type is unknown"
        if not 0 <= slot < len(node.get("outputs") or []):
            return "none", f"{_node_label(node)} has no output slot {slot}"
        return "link", [scope.exec_id(node.get("id")), slot]

    def promoted_value(self, scope: _Scope, sg_node: dict, sg_slot: int):
        """The value of the widget the editor promotes onto a subgraph node for one of its inputs: the subgraph
        input's first link that ends at a widget input inside; the subgraph node's own widgets_values (one per
        promoted widget, in input order) win over the inner widget's value."""
        promoted = []  # sg input slots that have a promoted widget, in order
        inner_value = {}
        for i, _inp in enumerate(sg_node.get("inputs") or []):
            found, value = self._inner_widget(scope, i, set())
            if found:
                promoted.append(i)
                inner_value[i] = value
        if sg_slot not in promoted:
            return False, None
        wv = sg_node.get("widgets_values")
        pos = promoted.index(sg_slot)
        if isinstance(wv, list) and pos < len(wv):
            return True, wv[pos]
        return True, inner_value[sg_slot]

    def _inner_widget(self, scope: _Scope, sg_slot: int, visited: set):
        for lid, (oid, oslot, tid, tslot, _t) in scope.links.items():
            if oid != str(SUBGRAPH_INPUT_ID) or oslot != sg_slot:
                continue
            target = scope.nodes.get(tid)
            if target is None or not 0 <= tslot < len(target.get("inputs") or []):
                continue
            inp = target["inputs"][tslot]
            if self.is_subgraph(target):
                key = (scope.path, tid, tslot)
                if key in visited:
                    continue
                visited.add(key)
                inner = self.inner_scope(scope, target)
                found, value = self._inner_widget(inner, tslot, visited)
                if found:
                    wv = target.get("widgets_values")
                    promoted = [i for i in range(len(target.get("inputs") or []))
                                if self._inner_widget(inner, i, set(visited))[0]]
                    pos = promoted.index(tslot) if tslot in promoted else -1
                    if isinstance(wv, list) and 0 <= pos < len(wv):
                        return True, wv[pos]
                    return True, value
                continue
            d = self.defs.get(target.get("type"))
            if d is None:
                continue
            wname = (inp.get("widget") or {}).get("name") or inp.get("name")
            layout = editor_widgets(d)
            idx = next((k for k, w in enumerate(layout) if w.name == wname and w.in_prompt), None)
            if idx is None:
                continue
            wv = target.get("widgets_values")
            if isinstance(wv, list):
                wv = _migrated_values(d, list(wv))
                if idx < len(wv):
                    return True, wv[idx]
            elif isinstance(wv, dict) and wname in wv:
                return True, wv[wname]
            return True, _default_for(layout[idx].kind, layout[idx].opts)
        return False, None

    def _bypass_slot(self, node: dict, slot: int, target_type) -> int:
        """The editor's ``#getBypassSlotIndex``."""
        inputs = node.get("inputs") or []
        if target_type in ("*", ""):
            return slot if len(inputs) > slot else (0 if inputs else -1)
        outputs = node.get("outputs") or []
        out_type = outputs[slot].get("type") if 0 <= slot < len(outputs) else None
        if slot < len(inputs) and _types_compatible(inputs[slot].get("type"), out_type) \
                and _types_compatible(inputs[slot].get("type"), target_type):
            return slot
        for i, inp in enumerate(inputs):
            if inp.get("type") == target_type:
                return i
        for i, inp in enumerate(inputs):
            if _types_compatible(inp.get("type"), out_type) and _types_compatible(inp.get("type"), target_type):
                return i
        return -1


def _wrap(value):
    return {"__value__": value} if isinstance(value, list) else value


def ui_to_api(workflow: dict, defs: Mapping[str, NodeDef], *,
              hint: Callable[[str], str | None] = pack_hint) -> Conversion:
    """Convert a UI-format workflow with the given node definitions the way the editor's ``graphToPrompt``
    does (subgraphs flattened to ``outer:inner`` ids); report every problem found on the way."""
    conv = Conversion(prompt={})
    problems = conv.problems
    problems += check_links(workflow)
    subgraphs = _collect_subgraphs(workflow)
    resolver = _Resolver(defs, subgraphs)

    def sort_key(nid):
        return [(0, int(p), "") if p.lstrip("-").isdigit() else (1, 0, p) for p in nid.split(":")]

    # every executable node, subgraphs expanded (the editor's getInnerNodes), with its scope
    flat: list[tuple[str, dict, _Scope]] = []

    def expand(scope: _Scope, depth: int = 0):
        for nid, node in scope.nodes.items():
            eid = scope.exec_id(nid)
            conv.labels[eid] = _node_label(node) if not scope.path else f"#{eid} {node.get('type')}" + (
                f' "{node["title"]}"' if node.get("title") and node.get("title") != node.get("type") else "")
            if resolver.is_subgraph(node):
                if depth > 32 or str(node.get("type")) in {str(s.graph.get("id")) for s in _ancestors(scope)}:
                    problems.append(Problem("error", "unsupported", "subgraph contains itself", eid,
                                            conv.labels[eid]))
                    continue
                if node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
                    what = "muted" if node.get("mode") == MODE_MUTED else "bypassed"
                    problems.append(Problem(
                        "warning", "subgraph_mode",
                        f"this subgraph node is {what}, but the editor (frontend 1.27) still sends the nodes inside "
                        "it" + (" and its outputs still come from them" if what == "muted" else
                                " (its outputs pass its inputs through)") + "; so does this conversion. Set the mode "
                        "on the nodes inside the subgraph instead", eid, conv.labels[eid]))
                expand(resolver.inner_scope(scope, node), depth + 1)
                continue
            flat.append((eid, node, scope))

    expand(_Scope(workflow, ()))

    # PrimitiveNode values go into the widgets they drive (what the editor's applyToGraph does)
    primitive_values: dict[tuple[str, str], Any] = {}
    for eid, node, scope in flat:
        if node.get("type") != "PrimitiveNode":  # muted ones too: the editor's applyToGraph ignores the mode
            continue
        wv = node.get("widgets_values")
        if not (isinstance(wv, list) and wv):
            continue
        for out in node.get("outputs") or []:
            for lid in out.get("links") or []:
                entry = scope.links.get(lid)
                if entry is None:
                    continue
                target = scope.nodes.get(entry[2])
                if target is None or not 0 <= entry[3] < len(target.get("inputs") or []):
                    continue
                inp = target["inputs"][entry[3]]
                wname = (inp.get("widget") or {}).get("name") or inp.get("name")
                primitive_values[(scope.exec_id(entry[2]), wname)] = wv[0]

    for eid, node, scope in sorted(flat, key=lambda t: sort_key(t[0])):
        ntype = node.get("type")
        label = conv.labels[eid]
        mode = node.get("mode", 0)
        if ntype in VIRTUAL_NODE_TYPES:
            continue
        if isinstance(ntype, str) and (ntype.startswith("workflow>") or ntype.startswith("workflow/")):
            problems.append(Problem("error", "unsupported", "group nodes are not supported: convert the group node "
                                    "back to its nodes in the editor (right click > Convert to nodes) and save",
                                    eid, label))
            conv.unknown.add(eid)
            continue
        if mode in (MODE_MUTED, MODE_BYPASS):
            continue
        node_def = defs.get(ntype)
        if node_def is None:
            where = hint(ntype) if hint else None
            msg = f"unknown node type '{ntype}'"
            msg += f": it comes from {where}" if where else ": is the custom node pack that provides it installed?"
            problems.append(Problem("error", "unknown_node", msg, eid, label))
            conv.unknown.add(eid)
            continue

        inputs: dict[str, Any] = {}
        for name, value in editor_widget_values(node, node_def, label, eid, problems).items():
            inputs[name] = _wrap(value)
        extra = _editor_extra_inputs(node_def)

        for slot, inp in enumerate(node.get("inputs") or []):
            name = inp.get("name")
            wname = (inp.get("widget") or {}).get("name")
            api_name = wname or name
            spec, _cat = node_def.input_spec(api_name)
            if spec is None:
                if api_name in extra and inp.get("link") is None:
                    continue  # the editor's own upload button input: never sent
                if inp.get("link") is not None or wname:
                    problems.append(Problem("error", "unknown_input",
                                            f"input '{api_name}' is not an input of {ntype} (renamed or removed?); "
                                            f"its inputs are {node_def.input_names()}", eid, label, api_name))
                continue
            if (eid, api_name) in primitive_values:
                inputs[api_name] = _wrap(primitive_values[(eid, api_name)])
                continue
            if inp.get("link") is None:
                continue
            want = spec[0] if isinstance(spec, (list, tuple)) and spec else None
            want_type = "COMBO" if isinstance(want, (list, tuple)) else want
            kind, value = resolver.resolve_input(scope, node, slot, inp.get("type") or want_type, set())
            if kind == "value":
                inputs[api_name] = _wrap(value)
            elif kind == "link":
                inputs[api_name] = value
            elif kind == "drop":
                inputs.pop(api_name, None)
                conv.dropped[(eid, api_name)] = value
            else:
                if api_name in inputs:
                    continue  # a widget input whose link resolves to nothing: the editor keeps the widget value
                conv.dropped[(eid, api_name)] = value
        conv.prompt[eid] = {"inputs": inputs, "class_type": ntype,
                            "_meta": {"title": node.get("title") or node_def.display_name or ntype}}

    # link targets: output slots and types (after every node is known)
    for eid, entry in conv.prompt.items():
        d = defs.get(entry["class_type"])
        for api_name, value in list(entry["inputs"].items()):
            if not (isinstance(value, list) and len(value) == 2):
                continue
            origin = conv.prompt.get(value[0])
            if origin is None:
                continue
            odef = defs.get(origin["class_type"])
            spec, _cat = d.input_spec(api_name) if d else (None, None)
            want = spec[0] if isinstance(spec, (list, tuple)) and spec else None
            want_type = "COMBO" if isinstance(want, (list, tuple)) else want
            if odef is None:
                continue
            if value[1] >= len(odef.outputs):
                problems.append(Problem("error", "broken_link",
                                        f"input '{api_name}' is linked to output slot {value[1]} of "
                                        f"{conv.labels.get(value[0], value[0])}, which has only {len(odef.outputs)} "
                                        "outputs", eid, conv.labels.get(eid), api_name))
            elif not _types_compatible(odef.outputs[value[1]], want_type):
                problems.append(Problem("error", "type_mismatch",
                                        f"input '{api_name}' expects {want_type} but is linked to "
                                        f"{conv.labels.get(value[0], value[0])} output {value[1]} "
                                        f"({odef.outputs[value[1]]})", eid, conv.labels.get(eid), api_name))
    return conv


def _ancestors(scope: _Scope):
    while scope.instance is not None:
        yield scope
        scope = scope.instance[1]
