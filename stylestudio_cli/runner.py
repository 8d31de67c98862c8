"""validate and run: the workflow -> API prompt -> checks -> ComfyUI's validation -> in-process execution."""
from __future__ import annotations

import copy
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, TextIO

from . import checks
from .comfy_env import ComfyEnv, _captured_logs, run_coro
from .convert import Conversion, Problem, is_api_format, ui_to_api


class SetError(ValueError):
    pass


# ----------------------------------------------------------------------------------------------------------
# --set NODE.INPUT=VALUE
# ----------------------------------------------------------------------------------------------------------
def parse_set(expr: str) -> tuple[str, str, Any]:
    """'TITLE_OR_ID.input=value' -> (node, input, value); the value is JSON when it parses, else a string.
    The node part may itself contain dots (titles): the input name is what follows the last dot."""
    if "=" not in expr:
        raise SetError(f"--set {expr!r}: expected NODE.INPUT=VALUE")
    left, raw = expr.split("=", 1)
    if "." not in left:
        raise SetError(f"--set {expr!r}: expected NODE.INPUT=VALUE (node title or id, a dot, the input name)")
    node, name = left.rsplit(".", 1)
    node, name = node.strip(), name.strip()
    if not node or not name:
        raise SetError(f"--set {expr!r}: expected NODE.INPUT=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node, name, value


def find_node(prompt: dict, key: str) -> str:
    """A node of the API prompt by id, title (``_meta.title``) or, when unique, class type."""
    if key in prompt:
        return key
    if key.startswith("#") and key[1:] in prompt:
        return key[1:]
    by_title = [nid for nid, n in prompt.items() if (n.get("_meta") or {}).get("title") == key]
    if len(by_title) == 1:
        return by_title[0]
    if len(by_title) > 1:
        raise SetError(f"--set: {len(by_title)} nodes are titled {key!r} (ids {', '.join(by_title)}); use an id")
    by_class = [nid for nid, n in prompt.items() if n.get("class_type") == key]
    if len(by_class) == 1:
        return by_class[0]
    if len(by_class) > 1:
        raise SetError(f"--set: {len(by_class)} {key} nodes (ids {', '.join(by_class)}); use a title or an id")
    titles = sorted({(n.get("_meta") or {}).get("title", "") for n in prompt.values()} - {""})
    raise SetError(f"--set: no node with id or title {key!r} (titles: {', '.join(titles)})")


def apply_sets(prompt: dict, sets: Iterable[str]) -> list[str]:
    """Apply --set expressions to the API prompt in place; ``class_type`` swaps a node's class. Returns notes."""
    notes = []
    for expr in sets or []:
        key, name, value = parse_set(expr)
        nid = find_node(prompt, key)
        if name == "class_type":
            if not isinstance(value, str):
                raise SetError(f"--set {expr!r}: class_type must be a string")
            prompt[nid]["class_type"] = value
        else:
            prompt[nid].setdefault("inputs", {})[name] = {"__value__": value} if isinstance(value, list) \
                and not (len(value) == 2 and isinstance(value[1], int)) else value
        notes.append(f"set #{nid}.{name} = {value!r}")
    return notes


# ----------------------------------------------------------------------------------------------------------
# validate
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Report:
    prompt: dict
    problems: list = field(default_factory=list)
    good_outputs: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    comfy_ok: bool = False

    @property
    def errors(self) -> list:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return self.comfy_ok and not self.errors

    def format(self) -> str:
        lines = []
        for p in sorted(self.problems, key=lambda p: (p.severity != "error", _id_key(p.node_id))):
            lines.append(f"  {p}")
        return "\n".join(lines)


def _id_key(nid):
    if nid is None:
        return (0, 0, "")
    return (1, int(nid), "") if str(nid).lstrip("-").isdigit() else (2, 0, str(nid))


def validate(env: ComfyEnv, workflow: dict, sets: Iterable[str] = (), *, verbose: bool = False) -> Report:
    defs = env.defs
    if is_api_format(workflow):
        conv = Conversion(prompt=copy.deepcopy(workflow))
    else:
        conv = ui_to_api(workflow, defs)
    prompt = conv.prompt
    report = Report(prompt=prompt, labels=dict(conv.labels))
    classes = {nid: n.get("class_type") for nid, n in prompt.items()}
    report.notes += apply_sets(prompt, sets)
    for nid, n in prompt.items():  # API-format input, or a class swapped by --set
        if nid not in report.labels or n.get("class_type") != classes.get(nid):
            report.labels[nid] = checks.node_label(prompt, nid)
    problems = list(conv.problems)
    skip = set(conv.unknown)
    problems += checks.check_values(prompt, defs, env.folder_paths, labels=report.labels, dropped=conv.dropped,
                                    skip=skip)
    problems += checks.check_ipadapter_presets(prompt, env.nodes, labels=report.labels, skip=skip)
    problems += checks.pack_failure_hint(problems, env)

    # ComfyUI's own validation, on the nodes it knows (an unknown type stops it at the first one)
    known = {nid: copy.deepcopy(n) for nid, n in prompt.items() if n.get("class_type") in defs and nid not in skip}
    for nid, n in known.items():
        for name, v in list((n.get("inputs") or {}).items()):
            if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int) and str(v[0]) not in known:
                del n["inputs"][name]
                conv.dropped.setdefault((nid, name), f"it comes from #{v[0]}, whose node type is unknown")
    already = {(p.node_id, p.input) for p in problems if p.node_id is not None}
    unknown_dependents = {(nid, name) for (nid, name), why in conv.dropped.items() if "unknown" in str(why)}
    if known:
        try:
            with _captured_logs(verbose):  # its logging.error lines repeat what is reported below
                result = checks.comfy_validate(env.execution, known, run_coro)
        except Exception as e:  # pragma: no cover - a ComfyUI bug or an incompatible version
            problems.append(Problem("error", "comfyui", f"execution.validate_prompt raised {type(e).__name__}: {e}"))
            result = (False, None, [], {})
        ok, _err, good, node_errors = (tuple(result) + (None, None, [], {}))[:4]
        report.good_outputs = list(good or [])
        report.comfy_ok = bool(ok) and not node_errors
        problems += checks.readable_validation(result, known, labels=report.labels,
                                               already=already | unknown_dependents, dropped=conv.dropped)
        if ok and node_errors:
            problems.append(Problem("error", "comfyui", "some outputs would be skipped by ComfyUI (see above); "
                                    f"only {', '.join(report.labels.get(o, o) for o in good)} would run"))
    else:
        problems.append(Problem("error", "comfyui", "no node of this workflow is known to this ComfyUI"))
    # what ComfyUI validated (with its value conversions) is what runs, as in the server
    report.prompt = known if known and len(known) == len(prompt) else prompt
    report.problems = _dedupe(problems)
    return report


def _dedupe(problems: list) -> list:
    seen, out = set(), []
    for p in problems:
        key = (p.severity, p.kind, p.node_id, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# ----------------------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------------------
class TerminalProgress:
    """A one-line progress bar on a terminal, sparse lines otherwise."""

    def __init__(self, stream: TextIO | None = None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = ""
        self._last_pct = -1
        self._open = False

    def node(self, label: str):
        self._end_line()
        self.label = label
        self._last_pct = -1
        print(f"> {label}", file=self.stream, flush=True)

    def update(self, value, total):
        total = max(int(total or 0), 1)
        value = min(int(value or 0), total)
        frac = value / total
        pct = int(frac * 100)
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        text = f"  [{bar}] {value}/{total}"
        if self.tty:
            self.stream.write("\r" + text)
            self.stream.flush()
            self._open = True
            if value >= total:
                self._end_line()
        elif value >= total or self._last_pct < 0 or pct // 25 > self._last_pct // 25:
            print(text, file=self.stream, flush=True)
        self._last_pct = pct

    def _end_line(self):
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


class _ServerStub:
    """What execution.PromptExecutor needs from the server: ``client_id``, ``last_node_id``, ``send_sync``."""

    def __init__(self, progress: TerminalProgress | None, labels: dict):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.progress = progress
        self.labels = labels
        self.messages: list = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))
        if self.progress is None or not isinstance(data, dict):
            return
        if event == "executing" and data.get("node") is not None:
            nid = str(data.get("node"))
            self.progress.node(self.labels.get(nid, f"#{nid}"))

    def queue_updated(self):
        pass


@dataclass
class RunResult:
    success: bool
    files: list = field(default_factory=list)      # absolute paths written by output nodes
    previews: list = field(default_factory=list)   # temp files (PreviewImage)
    error: str | None = None
    seconds: float = 0.0


def execute(env: ComfyEnv, report: Report, out_dir: str, *, workflow: dict | None = None,
            progress: TerminalProgress | None = None) -> RunResult:
    """Execute a validated prompt in-process; outputs go to ``out_dir``."""
    import comfy.utils

    fp = env.folder_paths
    execution = env.execution
    os.makedirs(out_dir, exist_ok=True)
    old_out = fp.get_output_directory()
    old_hook = getattr(comfy.utils, "PROGRESS_BAR_HOOK", None)
    old_pbar = getattr(comfy.utils, "PROGRESS_BAR_ENABLED", True)
    stub = _ServerStub(progress, report.labels)

    def hook(value, total, preview_image=None, prompt_id=None, node_id=None):
        import comfy.model_management
        comfy.model_management.throw_exception_if_processing_interrupted()
        if progress is not None:
            progress.update(value, total)

    fp.set_output_directory(os.path.abspath(out_dir))
    comfy.utils.set_progress_bar_global_hook(hook)
    comfy.utils.set_progress_bar_enabled(False)  # no tqdm bar on top of ours
    t0 = time.perf_counter()
    try:
        executor = execution.PromptExecutor(stub)
        extra_data = {"client_id": "stylestudio-cli"}
        if workflow is not None and not is_api_format(workflow):
            extra_data["extra_pnginfo"] = {"workflow": workflow}  # the PNGs open as this workflow again
        prompt_id = str(uuid.uuid4())
        stub.last_prompt_id = prompt_id
        outputs = list(report.good_outputs) or [nid for nid in report.prompt]
        if hasattr(executor, "execute_async"):  # recent ComfyUI; works inside a running event loop too
            run_coro(executor.execute_async(report.prompt, prompt_id, extra_data, outputs))
        else:
            executor.execute(report.prompt, prompt_id, extra_data, outputs)
        if progress is not None:
            progress._end_line()
        result = RunResult(success=bool(executor.success), seconds=time.perf_counter() - t0)
        for event, data in executor.status_messages:
            if event == "execution_error":
                nid = str(data.get("node_id"))
                tb = "".join(data.get("traceback") or [])
                result.error = (f"{report.labels.get(nid, '#' + nid)} failed: {data.get('exception_type')}: "
                                f"{data.get('exception_message')}" + (f"\n{tb}" if tb else ""))
            elif event == "execution_interrupted":
                result.error = "interrupted"
        history = getattr(executor, "history_result", {}) or {}
        for nid, ui in (history.get("outputs") or {}).items():
            for kind_list in ui.values() if isinstance(ui, dict) else []:
                if not isinstance(kind_list, list):
                    continue
                for item in kind_list:
                    if not isinstance(item, dict) or "filename" not in item:
                        continue
                    base = fp.get_directory_by_type(item.get("type", "output")) or fp.get_output_directory()
                    path = os.path.join(base, item.get("subfolder") or "", item["filename"])
                    (result.files if item.get("type", "output") == "output" else result.previews).append(path)
        return result
    finally:
        comfy.utils.set_progress_bar_global_hook(old_hook)
        comfy.utils.set_progress_bar_enabled(old_pbar)
        fp.set_output_directory(old_out)
