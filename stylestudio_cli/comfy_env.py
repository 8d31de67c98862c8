"""Load ComfyUI in this process, headless (or reuse the one already loaded).

Order matters and follows ComfyUI's own ``main.py``: ComfyUI's root goes first on ``sys.path``; ComfyUI's
command-line args (``comfy.cli_args.args``) are set before anything imports ``comfy.model_management`` (``--cpu``
when there is no GPU: a CUDA build of torch without a GPU fails at that import otherwise); ``utils.extra_config``
is imported before ``nodes`` (``nodes`` puts ``comfy/`` first on the path, which shadows the top-level ``utils``);
then ``nodes.init_extra_nodes()`` (a coroutine in recent versions) loads ``comfy_extras`` and every pack in
ComfyUI's ``custom_nodes`` folder(s), and ``nodes.load_custom_node()`` loads packs from elsewhere.

When ``nodes`` is already imported and initialised in this process (a running test session, a notebook, a
pack calling us), it is reused: nothing is initialised twice, and only packs that are not loaded yet are added.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .convert import NodeDef

log = logging.getLogger("stylestudio_cli")


class ComfyUINotFound(RuntimeError):
    pass


def run_coro(coro):
    """Run a coroutine to completion, also when called from inside a running event loop (in a thread then)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class LiveNodeDefs(Mapping):
    """``{class_type: NodeDef}`` over the live ``nodes.NODE_CLASS_MAPPINGS``, computed on first access."""

    def __init__(self, nodes_module):
        self._nodes = nodes_module
        self._cache: dict[str, NodeDef] = {}

    def __getitem__(self, name):
        if name not in self._cache:
            cls = self._nodes.NODE_CLASS_MAPPINGS[name]  # KeyError for unknown types
            self._cache[name] = NodeDef(
                inputs=cls.INPUT_TYPES(), outputs=tuple(getattr(cls, "RETURN_TYPES", ()) or ()),
                output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
                display_name=getattr(self._nodes, "NODE_DISPLAY_NAME_MAPPINGS", {}).get(name))
        return self._cache[name]

    def __contains__(self, name):
        return name in self._nodes.NODE_CLASS_MAPPINGS

    def __iter__(self):
        return iter(self._nodes.NODE_CLASS_MAPPINGS)

    def __len__(self):
        return len(self._nodes.NODE_CLASS_MAPPINGS)


@dataclass
class ComfyEnv:
    root: str
    nodes: Any
    execution: Any
    folder_paths: Any
    reused: bool
    import_failed: list = field(default_factory=list)   # comfy_extras files that failed to import
    pack_failures: list = field(default_factory=list)   # custom node folders that failed to load
    log_lines: list = field(default_factory=list)
    version: str = "?"

    @property
    def defs(self) -> LiveNodeDefs:
        return LiveNodeDefs(self.nodes)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        try:
            self.lines.append(f"{record.levelname}: {record.getMessage()}")
        except Exception:  # pragma: no cover
            self.lines.append(f"{record.levelname}: {record.msg}")


@contextlib.contextmanager
def _captured_logs(verbose: bool):
    """ComfyUI logs a lot while loading; keep it (for failure reports) and show it only with -v."""
    root = logging.getLogger()
    handler = _Capture()
    old_level = root.level
    old_handlers = list(root.handlers)
    root.addHandler(handler)
    if not verbose:
        for h in old_handlers:
            root.removeHandler(h)
    root.setLevel(logging.INFO if not verbose else min(old_level or logging.INFO, logging.INFO))
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        if not verbose:
            for h in old_handlers:
                root.addHandler(h)
        root.setLevel(old_level)


def find_comfyui(path: str | None) -> str:
    path = path or os.environ.get("COMFYUI_PATH")
    if not path:
        raise ComfyUINotFound("no ComfyUI given: pass --comfyui /path/to/ComfyUI or set COMFYUI_PATH")
    path = os.path.abspath(os.path.expanduser(path))
    if not (os.path.isfile(os.path.join(path, "nodes.py")) and os.path.isdir(os.path.join(path, "comfy"))):
        raise ComfyUINotFound(f"{path} is not a ComfyUI checkout (no nodes.py / comfy/ there)")
    return path


def _has_accelerator() -> bool:
    try:
        import torch
    except Exception:  # pragma: no cover - ComfyUI needs torch anyway
        return False
    try:
        if torch.cuda.is_available():
            return True
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return True
        if hasattr(torch, "xpu") and torch.xpu.is_available():
            return True
    except Exception:
        return False
    return False


def _already_loaded(root: str):
    mod = sys.modules.get("nodes")
    mappings = getattr(mod, "NODE_CLASS_MAPPINGS", None) if mod is not None else None
    if not mappings or "KSampler" not in mappings:
        return None
    loaded_root = os.path.dirname(os.path.realpath(getattr(mod, "__file__", "") or ""))
    if os.path.realpath(root) != loaded_root:
        raise ComfyUINotFound(f"this process already runs the ComfyUI at {loaded_root}; cannot also load {root}")
    return mod


def _loaded_pack_dirs(nodes_module) -> set[str]:
    return {os.path.realpath(p) for p in getattr(nodes_module, "LOADED_MODULE_DIRS", {}).values()}


def _install_prompt_server_stub():
    """Packs that register web routes at import time need ``server.PromptServer.instance``; headless there is
    no server, so give them an inert one (only when ComfyUI's ``server`` module imports and has none)."""
    try:
        import server  # ComfyUI's server.py
        from aiohttp import web
    except Exception:
        return
    if getattr(server.PromptServer, "instance", None) is not None:
        return

    class _HeadlessPromptServer:
        def __init__(self):
            self.routes = web.RouteTableDef()
            self.app = web.Application()
            self.sockets, self.sockets_metadata = {}, {}
            self.client_id = self.last_node_id = self.last_prompt_id = None
            self.supports, self.on_prompt_handlers = [], []
            self.number = 0
            self.loop = None

        def send_sync(self, *args, **kwargs):
            pass

        def add_on_prompt_handler(self, handler):
            self.on_prompt_handlers.append(handler)

        def queue_updated(self):
            pass

    server.PromptServer.instance = _HeadlessPromptServer()


def load_comfyui(comfyui_path: str | None = None, *, extra_custom_nodes: Iterable[str] = (),
                 cpu: bool | None = None, comfy_args: str | None = None,
                 extra_model_paths: Iterable[str] = (), custom_nodes: bool = True, api_nodes: bool = False,
                 verbose: bool = False) -> ComfyEnv:
    root = find_comfyui(comfyui_path)
    extra_custom_nodes = [os.path.abspath(os.path.expanduser(p)) for p in extra_custom_nodes]
    for p in extra_custom_nodes:
        if not os.path.isdir(p) and not p.endswith(".py"):
            raise ComfyUINotFound(f"--extra-custom-nodes {p}: not a folder")

    nodes = _already_loaded(root)
    reused = nodes is not None
    import_failed: list[str] = []
    with _captured_logs(verbose) as capture:
        if not reused:
            mod = sys.modules.get("comfy")
            if mod is not None and not os.path.realpath(getattr(mod, "__file__", "") or "").startswith(
                    os.path.realpath(root)):
                raise ComfyUINotFound(f"another 'comfy' package is already imported ({mod.__file__})")
            if root in sys.path:
                sys.path.remove(root)
            sys.path.insert(0, root)
            import comfy.options  # noqa: F401 - args parsing stays off: our argv is not ComfyUI's
            from comfy.cli_args import args, parser
            if "comfy.model_management" not in sys.modules:
                if comfy_args:
                    parsed = parser.parse_args(shlex.split(comfy_args))
                    for k, v in vars(parsed).items():
                        setattr(args, k, v)
                    # what comfy/cli_args.py does after its own parse (a raw None `fast` crashes every model load)
                    if getattr(args, "fast", ()) is None:
                        args.fast = set()
                    elif isinstance(getattr(args, "fast", None), list):
                        from comfy.cli_args import PerformanceFeature
                        args.fast = set(args.fast) if args.fast else set(PerformanceFeature)
                    if getattr(args, "force_fp16", False):
                        args.fp16_unet = True
                if cpu is None:
                    cpu = not _has_accelerator()
                if cpu:
                    args.cpu = True
                    if not any(getattr(args, a, False) for a in (
                            "use_split_cross_attention", "use_quad_cross_attention", "use_flash_attention",
                            "use_sage_attention")):
                        args.use_pytorch_cross_attention = True
            import utils.extra_config  # noqa: F401 - before `nodes`, as main.py does
            yaml_path = os.path.join(root, "extra_model_paths.yaml")
            if os.path.isfile(yaml_path):
                utils.extra_config.load_extra_path_config(yaml_path)
            for p in extra_model_paths:
                utils.extra_config.load_extra_path_config(os.path.abspath(p))
            import folder_paths  # noqa: F401
            import comfy.model_management  # noqa: F401
            import nodes as nodes_module
            nodes = nodes_module
            _install_prompt_server_stub()
            try:
                import hook_breaker_ac10a0 as hook_breaker
            except ImportError:  # older ComfyUI
                hook_breaker = None
            if hook_breaker is not None:
                hook_breaker.save_functions()
            try:
                init = nodes.init_extra_nodes
                import inspect
                params = inspect.signature(init).parameters
                kwargs = {}
                if "init_custom_nodes" in params:
                    kwargs["init_custom_nodes"] = custom_nodes
                if "init_api_nodes" in params:
                    kwargs["init_api_nodes"] = api_nodes
                res = init(**kwargs)
                if asyncio.iscoroutine(res):
                    res = run_coro(res)
                import_failed = list(res or [])
            finally:
                if hook_breaker is not None:
                    hook_breaker.restore_functions()
        else:
            import nodes as nodes_module  # noqa: F401 - the one already loaded
            if "SamplerCustomAdvanced" not in nodes.NODE_CLASS_MAPPINGS and "Canny" not in nodes.NODE_CLASS_MAPPINGS:
                res = nodes.init_builtin_extra_nodes()
                if asyncio.iscoroutine(res):
                    res = run_coro(res)
                import_failed = list(res or [])

        pack_failures = []
        loaded = _loaded_pack_dirs(nodes)
        for path in extra_custom_nodes:
            if os.path.realpath(path) in loaded:
                continue
            ignore = set(nodes.NODE_CLASS_MAPPINGS)  # never replace classes that are already registered
            res = nodes.load_custom_node(path, ignore, module_parent="custom_nodes")
            ok = run_coro(res) if asyncio.iscoroutine(res) else res
            if not ok:
                pack_failures.append(path)
            loaded.add(os.path.realpath(path))

    lines = capture.lines
    for line in lines:
        if "(IMPORT FAILED)" in line:
            pack_failures.append(line.split("(IMPORT FAILED):", 1)[-1].strip())
    import execution
    import folder_paths
    try:
        import comfyui_version
        version = comfyui_version.__version__
    except Exception:
        version = "?"
    return ComfyEnv(root=root, nodes=nodes, execution=execution, folder_paths=folder_paths, reused=reused,
                    import_failed=import_failed, pack_failures=sorted(set(pack_failures)), log_lines=lines,
                    version=version)
