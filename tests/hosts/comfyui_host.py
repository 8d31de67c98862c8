"""The real-ComfyUI test host (host tier): ComfyUI at ``$COMFYUI_PATH``, headless, in-process, on the CPU.

Set-up (once per process, :func:`setup_comfyui`), following ComfyUI's own ``main.py``:

1. ComfyUI's root goes first on ``sys.path``; ``comfy.cli_args.args`` gets ``cpu = True``,
   ``use_pytorch_cross_attention = True`` and ``base_directory = <temp dir>`` *before* anything imports
   ``comfy.model_management`` / ``folder_paths`` (so models, input, output, temp, user and custom_nodes all live
   in a fresh temp dir, never in the checkout).
2. ``utils.extra_config`` is imported before ``nodes`` (``nodes`` puts ``comfy/`` first on the path, which would
   shadow the top-level ``utils``).
3. The temp ``custom_nodes`` folder gets symlinks to the pack (this repository's root) and, when
   ``$IPADAPTER_PLUS_PATH`` is set, to ComfyUI_IPAdapter_plus; then ``nodes.init_extra_nodes()`` (a coroutine)
   loads comfy_extras and those custom nodes exactly as the server does (``init_external_custom_nodes`` ->
   ``load_custom_node``: ``__init__.py`` imported under its path as module name, "IMPORT FAILED" on error), with
   ComfyUI's ``hook_breaker`` around it as in ``main.start_comfyui``. API nodes are not loaded. The log is
   captured (``ComfyUIHost.load_log``).

The models are tiny random-weight UNets with the real SDXL / SD1.5 block layout (``_tiny_weights.py``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import weakref
from typing import Any

import torch

from .base import Host
from . import _tiny_weights as tw

PACK_DIR_NAME = "ComfyUI-StyleStudio"
IPADAPTER_DIR_NAME = "ComfyUI_IPAdapter_plus"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: tiny model sizes (see _tiny_weights.py for the layouts)
TINY = {"sdxl": {"model_channels": 32, "depth": 1, "num_head_channels": 32}, "sd15": {"model_channels": 32}}
MODEL_SEED = {"sdxl": 1234, "sd15": 4321}
#: image-embedding width of the random base IP-Adapter (free for base adapters; real files use 1024/1280)
IPA_CLIP_DIM = 64


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


class _State:
    """Process-wide: one ComfyUI per process."""
    ready = False
    comfyui_path: str = ""
    ipadapter_path: str | None = None
    base_dir: str = ""
    custom_nodes_dir: str = ""
    pack_module_name: str = ""
    pack_module: Any = None
    pack_error: str | None = None
    ipadapter_module: Any = None
    ipadapter_error: str | None = None
    load_log: list[str] = []
    extras_failed: list[str] = []
    setup_seconds: float = 0.0
    cpu: bool = True


_STATE = _State()
_LOCK = threading.Lock()


def _link(src: str, dst: str) -> None:
    try:
        os.symlink(src, dst, target_is_directory=True)
    except OSError:  # no symlinks (e.g. some Windows set-ups): copy is not an option for a live repo
        raise RuntimeError(f"cannot symlink {src} into {os.path.dirname(dst)}")


def _module_under(mod, root: str) -> bool:
    paths = [getattr(mod, "__file__", None)] + list(getattr(mod, "__path__", []) or [])
    return any(p and os.path.realpath(p).startswith(os.path.realpath(root)) for p in paths)


def setup_comfyui(comfyui_path: str | None = None, ipadapter_path: str | None = None,
                  pack_path: str | None = None, cpu: bool = True) -> _State:
    """Import and initialise the real ComfyUI once per process (see module docstring). Idempotent (the first
    call's arguments win). ``cpu=False`` (GPU benchmark): ComfyUI picks its device and attention kernel itself
    (no ``--cpu``, no ``--use-pytorch-cross-attention``, torch threads untouched)."""
    import time
    with _LOCK:
        if _STATE.ready:
            return _STATE
        t0 = time.perf_counter()
        comfyui_path = os.path.abspath(comfyui_path or os.environ["COMFYUI_PATH"])
        ipadapter_path = ipadapter_path if ipadapter_path is not None else os.environ.get("IPADAPTER_PLUS_PATH")
        ipadapter_path = os.path.abspath(ipadapter_path) if ipadapter_path else None
        pack_path = os.path.abspath(pack_path or REPO_ROOT)
        if not os.path.isfile(os.path.join(comfyui_path, "nodes.py")):
            raise RuntimeError(f"COMFYUI_PATH={comfyui_path} is not a ComfyUI checkout (no nodes.py)")
        for name in ("comfy", "utils", "folder_paths", "nodes"):
            mod = sys.modules.get(name)
            if mod is not None and not _module_under(mod, comfyui_path):
                raise RuntimeError(f"another top-level {name!r} module is already imported ({mod!r}; the stand-in "
                                   "host?): only one host per process, and ComfyUI needs its own")

        # The tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
        # oversubscription makes 2 threads up to 10x slower than 1. Same seed -> bit-identical latents holds
        # only at the same thread count, so the count is fixed here (override: STYLESTUDIO_HOST_THREADS).
        if cpu:
            torch.set_num_threads(int(os.environ.get("STYLESTUDIO_HOST_THREADS", "1")))

        base_dir = tempfile.mkdtemp(prefix="stylestudio_comfyui_")
        custom_nodes_dir = os.path.join(base_dir, "custom_nodes")
        for sub in ("models", "input", "output", "temp", "user", "custom_nodes"):
            os.makedirs(os.path.join(base_dir, sub), exist_ok=True)
        _link(pack_path, os.path.join(custom_nodes_dir, PACK_DIR_NAME))
        if ipadapter_path:
            if not os.path.isfile(os.path.join(ipadapter_path, "IPAdapterPlus.py")):
                raise RuntimeError(f"IPADAPTER_PLUS_PATH={ipadapter_path} is not ComfyUI_IPAdapter_plus")
            _link(ipadapter_path, os.path.join(custom_nodes_dir, IPADAPTER_DIR_NAME))

        if comfyui_path in sys.path:
            sys.path.remove(comfyui_path)
        sys.path.insert(0, comfyui_path)

        import comfy.options  # noqa: F401  (args parsing stays off: args = parser.parse_args([]))
        from comfy.cli_args import args
        if cpu:
            args.cpu = True
            args.use_pytorch_cross_attention = True
        args.base_directory = base_dir
        args.disable_api_nodes = True
        if "comfy.model_management" in sys.modules or "folder_paths" in sys.modules:
            raise RuntimeError("comfy.model_management / folder_paths were imported before the host set-up")

        handler = _ListHandler()
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(min(old_level, logging.INFO) if old_level else logging.INFO)
        try:
            import utils.extra_config  # noqa: F401  (before nodes, as main.py)
            import folder_paths
            assert os.path.realpath(folder_paths.models_dir) == os.path.realpath(os.path.join(base_dir, "models"))
            import comfy.model_management as mm
            if cpu:
                assert mm.get_torch_device().type == "cpu", mm.get_torch_device()
            import comfy.utils
            import nodes
            import hook_breaker_ac10a0

            loop = asyncio.new_event_loop()
            try:
                hook_breaker_ac10a0.save_functions()
                loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
                hook_breaker_ac10a0.restore_functions()
            finally:
                loop.close()
            comfy.utils.set_progress_bar_enabled(False)
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)

        log = []
        for r in handler.records:
            try:
                log.append(f"{r.levelname}: {r.getMessage()}")
            except Exception:  # pragma: no cover
                log.append(f"{r.levelname}: {r.msg}")
        _STATE.load_log = log
        _STATE.extras_failed = [line.split("IMPORT FAILED: ", 1)[1] for line in log if "IMPORT FAILED: " in line]

        def find(dir_name: str):
            path = os.path.join(custom_nodes_dir, dir_name)
            name = path.replace(".", "_x_")  # nodes.load_custom_node's module name for a folder
            m = sys.modules.get(name)
            failed = [ln for ln in log if path in ln and ("IMPORT FAILED" in ln or "Cannot import" in ln)]
            if m is None or failed or dir_name not in nodes.LOADED_MODULE_DIRS:
                tb = [ln for ln in log if "Traceback" in ln or path in ln]
                return None, f"ComfyUI could not load {path}:\n" + "\n".join(tb or log[-30:])
            return m, None

        _STATE.pack_module_name = os.path.join(custom_nodes_dir, PACK_DIR_NAME).replace(".", "_x_")
        _STATE.pack_module, _STATE.pack_error = find(PACK_DIR_NAME)
        if ipadapter_path:
            _STATE.ipadapter_module, _STATE.ipadapter_error = find(IPADAPTER_DIR_NAME)
        _STATE.comfyui_path = comfyui_path
        _STATE.ipadapter_path = ipadapter_path
        _STATE.base_dir = base_dir
        _STATE.custom_nodes_dir = custom_nodes_dir
        _STATE.cpu = cpu
        _STATE.setup_seconds = time.perf_counter() - t0
        _STATE.ready = True
        import atexit
        atexit.register(_at_exit)
        return _STATE


_HOSTS: "weakref.WeakSet[ComfyUIHost]" = weakref.WeakSet()


def _at_exit() -> None:
    """Drop the model patchers while the interpreter is still intact (ModelPatcher.__del__ otherwise prints
    "Exception ignored ... 'NoneType' object has no attribute 'ON_DETACH'" during interpreter shutdown), then
    remove the temp base dir."""
    try:
        for h in list(_HOSTS):
            h._base.clear()
        import comfy.model_management as mm
        mm.current_loaded_models.clear()
        import gc
        gc.collect()
    finally:
        shutil.rmtree(_STATE.base_dir, ignore_errors=True)


class _NoClipVision:
    """Passed as IPAdapterEmbeds' ``clip_vision`` for a *base* adapter without ``neg_embed``: IPAdapter_plus then
    uses zeros for the uncond embeds and never touches the model (its node only checks it is not None)."""

    def __getattr__(self, name):
        raise AssertionError(f"the CLIP vision model was used ({name}); the host has none")


class ComfyUIHost(Host):
    name = "comfyui"

    def __init__(self, comfyui_path: str | None = None, ipadapter_path: str | None = None,
                 pack_path: str | None = None):
        self.state = setup_comfyui(comfyui_path, ipadapter_path, pack_path, cpu=True)
        if not self.state.cpu:
            raise RuntimeError("ComfyUI was set up for a GPU (setup_comfyui(cpu=False)); the test host needs the CPU")
        self.real_ipadapter = self.state.ipadapter_path is not None
        if self.real_ipadapter and self.state.ipadapter_module is None:
            raise RuntimeError(self.state.ipadapter_error)
        self._base: dict[str, Any] = {}
        self._ipa_files: dict[str, str] = {}
        self._standin = None
        _HOSTS.add(self)

    # --- the pack ---------------------------------------------------------------------------------------
    @property
    def load_log(self) -> list[str]:
        return list(self.state.load_log)

    def pack(self):
        if self.state.pack_module is None:
            raise AssertionError(self.state.pack_error)
        return self.state.pack_module

    # --- models and conditioning ----------------------------------------------------------------------
    @staticmethod
    def _arch(arch: str) -> str:
        return tw._arch(arch)

    def base_model(self, arch: str = "sdxl"):
        arch = self._arch(arch)
        if arch not in self._base:
            if arch == "sdxl":
                self._base[arch] = tw.make_tiny_sdxl(seed=MODEL_SEED[arch], **TINY[arch])
            else:
                self._base[arch] = tw.make_tiny_sd15(seed=MODEL_SEED[arch], **TINY[arch])
        return self._base[arch]

    def tiny_model(self, arch: str = "sdxl"):
        return self.base_model(arch).clone()

    def non_unet_model(self):
        if "flux" not in self._base:
            self._base["flux"] = tw.make_tiny_flux(seed=7)
        return self._base["flux"].clone()

    def conditioning(self, arch: str, seed: int, tokens: int = 8) -> list:
        arch = self._arch(arch)
        g = torch.Generator().manual_seed(seed)
        ctx = tw.SDXL_CONTEXT_DIM if arch == "sdxl" else tw.SD15_CONTEXT_DIM
        cond = torch.randn(1, tokens, ctx, generator=g)
        if arch == "sdxl":
            # what CLIPTextEncode gives with an SDXL CLIP: pooled_output only; width/height/crop/target then
            # take encode_adm's defaults (768, 0)
            return [[cond, {"pooled_output": torch.randn(1, tw.SDXL_POOLED_DIM, generator=g)}]]
        return [[cond, {}]]

    def empty_latent(self, arch: str, batch: int = 1, size: int = 64) -> dict:
        import nodes
        return nodes.EmptyLatentImage().generate(size, size, batch)[0]

    # --- IP-Adapter -------------------------------------------------------------------------------------
    def _ipadapter_file(self, arch: str) -> str:
        """Write (once) the random IP-Adapter for the tiny ``arch`` model into the temp ``ipadapter`` folder and
        return its name as IPAdapterModelLoader lists it."""
        if arch not in self._ipa_files:
            import folder_paths
            folder = folder_paths.get_folder_paths("ipadapter")[0]
            fname = f"tiny-random-ip-adapter_{arch}.safetensors"
            tw.write_random_ipadapter(os.path.join(folder, fname), arch, TINY[arch]["model_channels"],
                                      depth=TINY[arch].get("depth"), clip_embeddings_dim=IPA_CLIP_DIM, seed=99)
            assert fname in folder_paths.get_filename_list("ipadapter")
            self._ipa_files[arch] = fname
        return self._ipa_files[arch]

    def apply_ipadapter(self, model, *, arch: str, weight: float = 1.0, weight_type: str = "style transfer",
                        start_at: float = 0.0, end_at: float = 1.0, negative_image: bool = False, mask=None,
                        seed: int = 0):
        arch = self._arch(arch)
        if not self.real_ipadapter:
            return self._standin_apply(model, arch=arch, weight=weight, weight_type=weight_type,
                                       start_at=start_at, end_at=end_at, negative_image=negative_image,
                                       mask=mask, seed=seed)
        import nodes
        g = torch.Generator().manual_seed(seed)
        pos_embed = torch.randn(1, IPA_CLIP_DIM, generator=g)
        neg_embed = None
        if negative_image:
            neg_embed = torch.randn(1, IPA_CLIP_DIM, generator=torch.Generator().manual_seed(seed + 100003))
        attn_mask = None
        if mask is not None:
            attn_mask = torch.as_tensor(mask, dtype=torch.float32)
            if attn_mask.dim() == 2:
                attn_mask = attn_mask.unsqueeze(0)
        with torch.inference_mode():  # as the executor runs every node
            loader = nodes.NODE_CLASS_MAPPINGS["IPAdapterModelLoader"]()
            ipadapter = getattr(loader, loader.FUNCTION)(self._ipadapter_file(arch))[0]
            node = nodes.NODE_CLASS_MAPPINGS["IPAdapterEmbeds"]()
            out = getattr(node, node.FUNCTION)(
                model, ipadapter, pos_embed, weight, weight_type, start_at, end_at, neg_embed=neg_embed,
                attn_mask=attn_mask, clip_vision=None if negative_image else _NoClipVision(),
                embeds_scaling="V only")
        return out[0]

    def _standin_apply(self, model, **kw):
        if self._standin is None:
            try:
                from ..fakes import ipadapter_standin  # type: ignore
            except ImportError:
                try:
                    from fakes import ipadapter_standin  # type: ignore
                except ImportError:
                    import importlib.util
                    path = os.path.join(REPO_ROOT, "tests", "fakes", "ipadapter_standin.py")
                    if not os.path.isfile(path):
                        raise RuntimeError("IPADAPTER_PLUS_PATH is unset and tests/fakes/ipadapter_standin.py "
                                           "does not exist")
                    spec = importlib.util.spec_from_file_location("_stylestudio_ipadapter_standin", path)
                    ipadapter_standin = importlib.util.module_from_spec(spec)
                    spec.loader.exec_module(ipadapter_standin)
            self._standin = ipadapter_standin
        with torch.inference_mode():
            return self._standin.apply_ipadapter(model, **kw)

    def model_sampling_edm(self, model, sigma_max: float = 120.0, sigma_min: float = 0.002):
        import nodes
        node = nodes.NODE_CLASS_MAPPINGS["ModelSamplingContinuousEDM"]()
        with torch.inference_mode():
            return getattr(node, node.FUNCTION)(model, "eps", sigma_max, sigma_min)[0]

    def ip_tokens(self, model) -> dict:
        attn2 = model.model_options["transformer_options"]["patches_replace"]["attn2"]
        first = next(iter(attn2.values()))
        kw = first.kwargs[0]
        return {"cond": kw["cond"], "uncond": kw["uncond"]}

    # --- sampling --------------------------------------------------------------------------------------
    def ksampler(self, model, positive, negative, latent, *, seed: int = 0, steps: int = 4, cfg: float = 5.0,
                 sampler_name: str = "euler", scheduler: str = "normal", denoise: float = 1.0, noise_mask=None):
        import comfy.utils
        import nodes
        lat = dict(latent)
        if noise_mask is not None:
            lat["noise_mask"] = noise_mask
        comfy.utils.set_progress_bar_enabled(False)  # common_ksampler: disable_pbar = not PROGRESS_BAR_ENABLED
        with torch.inference_mode():  # as execution.PromptExecutor runs every node
            out = nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, lat,
                                        denoise=denoise)
        return out[0]["samples"].clone()  # a normal tensor, usable outside inference mode

    def ksampler_advanced(self, model, positive, negative, latent, *, add_noise=True, seed=0, steps=4, cfg=5.0,
                          sampler_name="euler", scheduler="normal", start_at_step=0, end_at_step=10000,
                          return_with_leftover_noise=False):
        import comfy.utils
        import nodes
        comfy.utils.set_progress_bar_enabled(False)
        with torch.inference_mode():
            out = nodes.KSamplerAdvanced().sample(model, "enable" if add_noise else "disable", seed, steps, cfg,
                                                  sampler_name, scheduler, positive, negative, dict(latent),
                                                  start_at_step, end_at_step,
                                                  "enable" if return_with_leftover_noise else "disable")
        return out[0]

    def sampler_names(self) -> list[str]:
        import comfy.samplers
        return list(comfy.samplers.KSampler.SAMPLERS)

    @contextlib.contextmanager
    def force_split(self):
        """calc_cond_batch (comfy/samplers.py ``_calc_cond_batch``) batches chunks only while
        ``memory_required(...) * 1.5 < model_management.get_free_memory(device)``; with 0 free memory it falls
        back to one chunk per forward. Only that caller sees 0: model loading keeps the real number."""
        import comfy.model_management as mm
        import comfy.samplers
        original = mm.get_free_memory
        target = comfy.samplers._calc_cond_batch.__code__

        def get_free_memory(*args, **kwargs):
            if sys._getframe(1).f_code is target:
                return 0
            return original(*args, **kwargs)

        mm.get_free_memory = get_free_memory
        try:
            yield
        finally:
            mm.get_free_memory = original
