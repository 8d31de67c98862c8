"""UI-format workflow (what the graph editor saves) -> API-format prompt (what ComfyUI executes).

Pure Python, no ComfyUI import: the node definitions are passed in as ``{class_type: NodeDef}`` (built from the
live ``nodes.NODE_CLASS_MAPPINGS`` by :mod:`stylestudio_cli.comfy_env`, or by hand in tests).

What the conversion follows (the graph editor's own rules for queueing a prompt):

* Widget values are assigned to the widget inputs in ``INPUT_TYPES`` order (required, then optional). Inputs
  whose type is INT, FLOAT, STRING, BOOLEAN or a combo (a list, or "COMBO" with ``options``) are widgets;
  ``forceInput`` ones may or may not have a value (editor versions differ). Extra editor-only values are
  skipped: the "control after generate" value after seed-like INT/combo widgets (``control_after_generate``,
  or an INT named ``seed``/``noise_seed``) and the upload button's value after upload combos (LoadImage's
  ``"image"``). The assignment is checked against the value types, so a renamed, added, removed or reordered
  widget input is reported instead of silently shifting values.
* Links become ``[origin_id, origin_slot]``. A link from a **bypassed** node (mode 4) is passed through to that
  node's input of the matching type (same slot index first, then the first exact type match, then the first
  compatible one); from a **muted** node (mode 2) the input is dropped; **Reroute** nodes are followed;
  **PrimitiveNode** values are written into the widget they drive; **Note**/**MarkdownNote** are dropped.
* A widget input that has a link ("converted widget") takes the link, not the stored value.
* Array widget values are wrapped as ``{"__value__": [...]}`` (arrays mean links in the API format).
* Group nodes (``workflow>...``) and subgraphs are reported as unsupported.
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
@dataclass
class _Token:
    name: str
    kind: str            # INT FLOAT STRING BOOLEAN COMBO | CONTROL | UPLOAD
    opts: dict
    optional: bool       # may be absent from widgets_values
    main: bool           # a real input (not an editor-only extra value)


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


def widget_inputs(node_def: NodeDef) -> list[tuple[str, str, dict]]:
    """``[(name, kind, options)]`` of the inputs the graph editor shows as widgets, in widget order."""
    out = []
    for cat in ("required", "optional"):
        for name, spec in (node_def.inputs.get(cat) or {}).items():
            kind, opts = _classify(spec)
            if kind is not None:
                out.append((name, kind, opts))
    return out


def _tokens(node_def: NodeDef) -> list[_Token]:
    toks = []
    for name, kind, opts in widget_inputs(node_def):
        toks.append(_Token(name, kind, opts, optional=bool(opts.get("forceInput")), main=True))
        if (kind in ("INT", "COMBO") and opts.get("control_after_generate")) or (kind == "INT" and name in SEED_NAMES):
            toks.append(_Token(name, "CONTROL", {}, optional=True, main=False))
        if kind == "COMBO" and any(opts.get(k) for k in UPLOAD_FLAGS):
            toks.append(_Token(name, "UPLOAD", {}, optional=True, main=False))
    return toks


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
        return value in CONTROL_VALUES
    if kind == "UPLOAD":
        return value is None or isinstance(value, str)
    return False


def _align(tokens: list[_Token], values: list, allow_trailing: bool, allow_missing: bool):
    """Assign values to tokens in order. Optional tokens may be skipped; required ones must take a value that
    fits. Returns ``(assignment {token index: value}, leftover values, missing token indices)`` or None."""
    n_t, n_v = len(tokens), len(values)
    seen = set()

    def go(ti, vi):
        if (ti, vi) in seen:
            return None
        if ti == n_t:
            if vi == n_v or allow_trailing:
                return {}, n_v - vi, []
            seen.add((ti, vi))
            return None
        tok = tokens[ti]
        if vi == n_v:  # values exhausted
            rest = [i for i in range(ti, n_t) if not tokens[i].optional]
            if not rest or allow_missing:
                return {}, 0, rest
            seen.add((ti, vi))
            return None
        if _fits(tok.kind, values[vi]):
            r = go(ti + 1, vi + 1)
            if r is not None:
                a, left, miss = r
                return {ti: values[vi], **a}, left, miss
        if tok.optional:
            r = go(ti + 1, vi)
            if r is not None:
                return r
        seen.add((ti, vi))
        return None

    return go(0, 0)


def _default_for(kind: str, opts: dict):
    if "default" in opts:
        return opts["default"]
    if kind == "COMBO":
        return (opts.get("options") or [None])[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def _assign_widgets(node: dict, node_def: NodeDef, label: str, nid: str, problems: list) -> dict:
    """{input name: value} from the node's widgets_values."""
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, dict):  # some packs save {name: value}
        names = {name for name, _k, _o in widget_inputs(node_def)}
        return {k: v for k, v in values.items() if k in names}
    values = list(values)
    tokens = _tokens(node_def)
    ctype = node.get("type")

    result = _align(tokens, values, allow_trailing=False, allow_missing=False)
    note = None
    if result is None:
        result = _align(tokens, values, allow_trailing=True, allow_missing=False)
        if result is not None:
            note = ("warning", f"{result[1]} widget value(s) at the end of widgets_values match no input of "
                    f"{ctype} and are ignored: {values[len(values) - result[1]:]!r}")
    if result is None:
        result = _align(tokens, values, allow_trailing=False, allow_missing=True)
        if result is not None:
            missing = [tokens[i].name for i in result[2]]
            note = ("warning", f"widgets_values has no value for {', '.join(missing)} (an input added to {ctype} "
                    "after the workflow was saved?); the default is used")
    if result is None:
        # positional fallback, as the editor itself would load it; every misfit is an error
        mains = [t for t in tokens if t.main and not t.optional]
        out, bad, vi = {}, [], 0
        for tok in mains:
            if vi < len(values):
                out[tok.name] = values[vi]
                if not _fits(tok.kind, values[vi]):
                    bad.append(f"{tok.name} ({tok.kind}) <- {values[vi]!r}")
                vi += 1
                if vi < len(values) and any(t.name == tok.name and t.kind == "CONTROL" for t in tokens) \
                        and values[vi] in CONTROL_VALUES:
                    vi += 1
        expected = [f"{t.name}:{t.kind}" for t in mains]
        problems.append(Problem("error", "widget_values",
                                f"widgets_values {values!r} do not match the widget inputs of {ctype} "
                                f"{expected} (was an input renamed, added, removed or reordered?)"
                                + (f"; mismatched: {'; '.join(bad)}" if bad else ""), nid, label))
        return out
    assignment, _left, missing = result
    if note:
        problems.append(Problem(note[0], "widget_values", note[1], nid, label))
    out = {}
    for ti, value in assignment.items():
        tok = tokens[ti]
        if tok.main:
            out[tok.name] = value
    for ti in missing:
        tok = tokens[ti]
        out[tok.name] = _default_for(tok.kind, tok.opts)
    return out


# ----------------------------------------------------------------------------------------------------------
# conversion
# ----------------------------------------------------------------------------------------------------------
class _Resolver:
    def __init__(self, nodes: dict, links: dict, defs: Mapping[str, NodeDef]):
        self.nodes, self.links, self.defs = nodes, links, defs

    def resolve_input(self, node: dict, slot: int, target_type, visited: set):
        """('link', [id, slot]) | ('value', v) | ('none', reason)"""
        inputs = node.get("inputs") or []
        if not 0 <= slot < len(inputs):
            return "none", f"{_node_label(node)} has no input slot {slot}"
        lid = inputs[slot].get("link")
        if lid is None:
            return "none", f"nothing is connected to input '{inputs[slot].get('name')}' of {_node_label(node)}"
        entry = self.links.get(lid)
        if entry is None:
            return "none", f"link {lid} is missing from the links table"
        return self.resolve_output(entry[0], entry[1], target_type if target_type not in (None, "*") else
                                   inputs[slot].get("type"), visited)

    def resolve_output(self, nid: str, slot: int, target_type, visited: set):
        key = (nid, slot)
        if key in visited:
            return "none", f"circular pass-through at node {nid}"
        visited.add(key)
        node = self.nodes.get(nid)
        if node is None:
            return "none", f"node {nid} does not exist"
        ntype = node.get("type")
        mode = node.get("mode", 0)
        outputs = node.get("outputs") or []
        if mode == MODE_BYPASS:
            idx = self._bypass_slot(node, slot, target_type)
            if idx < 0:
                return "none", (f"bypassed {_node_label(node)} has no input of type {target_type} to pass "
                                "through")
            return self.resolve_input(node, idx, target_type, visited)
        if ntype == "PrimitiveNode":
            wv = node.get("widgets_values")
            if isinstance(wv, list) and wv:
                return "value", wv[0]
            return "none", f"{_node_label(node)} has no value"
        if ntype in VIRTUAL_NODE_TYPES:  # Reroute (Notes have no outputs)
            if node.get("inputs"):
                return self.resolve_input(node, min(slot, len(node["inputs"]) - 1), target_type, visited)
            return "none", f"{_node_label(node)} passes nothing through"
        if mode == MODE_MUTED:
            return "none", f"it comes from muted {_node_label(node)}"
        if ntype not in self.defs:
            return "none", f"it comes from {_node_label(node)}, whose node type is unknown"
        if not 0 <= slot < len(outputs):
            return "none", f"{_node_label(node)} has no output slot {slot}"
        return "link", [nid, slot]

    def _bypass_slot(self, node: dict, slot: int, target_type) -> int:
        inputs = node.get("inputs") or []
        if target_type in (None, "", "*"):
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
    """Convert a UI-format workflow with the given node definitions; report every problem found on the way."""
    conv = Conversion(prompt={})
    problems = conv.problems
    problems += check_links(workflow)
    nodes: dict[str, dict] = {}
    for node in workflow.get("nodes") or []:
        nodes.setdefault(str(node.get("id")), node)
    links, _ = _links_table(workflow)
    subgraphs = {str(sg.get("id")) for sg in ((workflow.get("definitions") or {}).get("subgraphs") or [])
                 if isinstance(sg, dict)}
    resolver = _Resolver(nodes, links, defs)

    def sort_key(nid):
        return (0, int(nid)) if nid.lstrip("-").isdigit() else (1, nid)

    # PrimitiveNode values go into the widgets they drive (what the editor's applyToGraph does)
    primitive_values: dict[tuple[str, str], Any] = {}
    for nid, node in nodes.items():
        if node.get("type") != "PrimitiveNode" or node.get("mode", 0) in (MODE_MUTED,):
            continue
        wv = node.get("widgets_values")
        if not (isinstance(wv, list) and wv):
            continue
        for out in node.get("outputs") or []:
            for lid in out.get("links") or []:
                entry = links.get(lid)
                if entry is None:
                    continue
                target = nodes.get(entry[2])
                if target is None or not 0 <= entry[3] < len(target.get("inputs") or []):
                    continue
                inp = target["inputs"][entry[3]]
                wname = (inp.get("widget") or {}).get("name") or inp.get("name")
                primitive_values[(entry[2], wname)] = wv[0]

    for nid in sorted(nodes, key=sort_key):
        node = nodes[nid]
        ntype = node.get("type")
        label = _node_label(node)
        conv.labels[nid] = label
        mode = node.get("mode", 0)
        if ntype in VIRTUAL_NODE_TYPES:
            continue
        if isinstance(ntype, str) and (ntype.startswith("workflow>") or ntype.startswith("workflow/")):
            problems.append(Problem("error", "unsupported", "group nodes are not supported: convert the group node "
                                    "back to its nodes in the editor (right click > Convert to nodes) and save",
                                    nid, label))
            conv.unknown.add(nid)
            continue
        if ntype in subgraphs:
            problems.append(Problem("error", "unsupported", "subgraphs are not supported: unpack the subgraph in "
                                    "the editor (right click > Unpack subgraph) and save", nid, label))
            conv.unknown.add(nid)
            continue
        if mode in (MODE_MUTED, MODE_BYPASS):
            continue
        node_def = defs.get(ntype)
        if node_def is None:
            where = hint(ntype) if hint else None
            msg = f"unknown node type '{ntype}'"
            msg += f": it comes from {where}" if where else ": is the custom node pack that provides it installed?"
            problems.append(Problem("error", "unknown_node", msg, nid, label))
            conv.unknown.add(nid)
            continue

        inputs: dict[str, Any] = {}
        widget_names = {name for name, _k, _o in widget_inputs(node_def)}
        for name, value in _assign_widgets(node, node_def, label, nid, problems).items():
            inputs[name] = _wrap(value)

        for slot, inp in enumerate(node.get("inputs") or []):
            name = inp.get("name")
            wname = (inp.get("widget") or {}).get("name")
            api_name = wname or name
            spec, _cat = node_def.input_spec(api_name)
            if spec is None:
                if inp.get("link") is not None or wname:
                    problems.append(Problem("error", "unknown_input",
                                            f"input '{api_name}' is not an input of {ntype} (renamed or removed?); "
                                            f"its inputs are {node_def.input_names()}", nid, label, api_name))
                continue
            if (nid, api_name) in primitive_values:
                inputs[api_name] = _wrap(primitive_values[(nid, api_name)])
                continue
            if inp.get("link") is None:
                continue
            want = spec[0] if isinstance(spec, (list, tuple)) and spec else None
            want_type = "COMBO" if isinstance(want, (list, tuple)) else want
            kind, value = resolver.resolve_input(node, slot, inp.get("type") or want_type, set())
            if kind == "value":
                inputs[api_name] = _wrap(value)
            elif kind == "link":
                inputs[api_name] = value
                origin = nodes[value[0]]
                odef = defs.get(origin.get("type"))
                if odef is not None:
                    if value[1] >= len(odef.outputs):
                        problems.append(Problem("error", "broken_link",
                                                f"input '{api_name}' is linked to output slot {value[1]} of "
                                                f"{_node_label(origin)}, which has only {len(odef.outputs)} outputs",
                                                nid, label, api_name))
                    elif not _types_compatible(odef.outputs[value[1]], want_type):
                        problems.append(Problem("error", "type_mismatch",
                                                f"input '{api_name}' expects {want_type} but is linked to "
                                                f"{_node_label(origin)} output {value[1]} ({odef.outputs[value[1]]})",
                                                nid, label, api_name))
            else:
                if api_name in widget_names and api_name in inputs:
                    continue  # a converted widget whose source is gone: the editor keeps the widget value
                inputs.pop(api_name, None)
                conv.dropped[(nid, api_name)] = value
        entry = {"inputs": inputs, "class_type": ntype,
                 "_meta": {"title": node.get("title") or node_def.display_name or ntype}}
        conv.prompt[nid] = entry
    return conv
