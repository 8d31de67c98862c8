"""Where the benchmark samples: the real ComfyUI (``$COMFYUI_PATH``) or the test stand-in.

Both adapters expose the same small surface the harness needs (``node``, ``base_model``, ``apply_ipadapter``,
``conditioning``, ``empty_latent``, ``ksampler``, ``describe``), built from the test hosts in ``tests/hosts``
(used read-only):

* ``RealComfyUI`` initialises ComfyUI exactly as the host-tier tests do
  (``tests/hosts/comfyui_host.setup_comfyui``: headless, temp model folders, the pack and ComfyUI_IPAdapter_plus
  loaded through ``nodes.init_extra_nodes``): on the CPU with ``--cpu``, PyTorch attention and one torch thread
  (``STYLESTUDIO_HOST_THREADS``), on a GPU with ``cpu=False`` so ComfyUI picks its own device and attention
  kernel. Models come from ``tests/hosts/_tiny_weights.py`` (the tiny SDXL of the host tier, or the real
  SDXL-1024 UNet with random weights). The IP-Adapter is a random-weight file in the standard format, loaded by
  IPAdapter_plus's own ``IPAdapterModelLoader`` and applied by its ``IPAdapterEmbeds`` node (weight type
  "style transfer"), as the host tier does.
* ``Standin`` wraps ``tests/hosts/standin_host.StandinHost`` (tests/standin + tests/fakes/ipadapter_standin).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(REPO_ROOT, "tests")
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

#: image-embedding width of the random IP-Adapter (base adapter: 4 image tokens); real files use 1024/1280
IPA_CLIP_DIM = {"tiny": 64, "sdxl-full": 1280}


def _git_commit(path: str | None) -> str | None:
    if not path:
        return None
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "--short=8", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------- real ComfyUI
class RealComfyUI:
    name = "comfyui"

    def __init__(self, device: str = "auto"):
        comfyui_path = os.path.abspath(os.environ["COMFYUI_PATH"])
        ipadapter_path = os.environ.get("IPADAPTER_PLUS_PATH")
        if not ipadapter_path:
            sibling = os.path.join(os.path.dirname(comfyui_path), "ComfyUI_IPAdapter_plus")
            ipadapter_path = sibling if os.path.isdir(sibling) else None
        if not ipadapter_path:
            raise SystemExit("the benchmark needs ComfyUI_IPAdapter_plus: set IPADAPTER_PLUS_PATH")
        self.ipadapter_path = os.path.abspath(ipadapter_path)
        self.comfyui_path = comfyui_path
        want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if want_cuda and not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        from hosts import comfyui_host as ch
        # cpu=True: --cpu, PyTorch attention, 1 torch thread (STYLESTUDIO_HOST_THREADS) as the host tier runs;
        # cpu=False: ComfyUI picks the GPU and its default attention kernel.
        state = ch.setup_comfyui(comfyui_path, self.ipadapter_path, cpu=not want_cuda)
        if state.pack_module is None:
            raise RuntimeError(state.pack_error)
        if state.ipadapter_module is None:
            raise RuntimeError(state.ipadapter_error)
        self._pack = state.pack_module
        self.setup = f"tests/hosts/comfyui_host.setup_comfyui(cpu={not want_cuda})"
        import comfy.model_management as mm
        self.device = mm.get_torch_device()
        self._ipa_files: dict = {}

    def describe(self) -> dict:
        import comfyui_version
        commit = _git_commit(self.comfyui_path) or os.environ.get("COMFYUI_COMMIT") or "commit unknown"
        ipa_commit = _git_commit(self.ipadapter_path) or os.environ.get("IPADAPTER_PLUS_COMMIT") or "commit unknown"
        import comfy.ldm.modules.attention as attn
        return {"kind": "comfyui", "label": f"real ComfyUI {comfyui_version.__version__} ({commit})",
                "comfyui_version": comfyui_version.__version__, "comfyui_commit": commit,
                "comfyui_path": self.comfyui_path, "ipadapter_plus_path": self.ipadapter_path,
                "ipadapter_plus_commit": ipa_commit, "setup": self.setup,
                "attention": attn.optimized_attention.__name__}

    def node(self, class_name: str):
        import importlib  # the pack's registry (V3: no top-level mapping; `nodes` is imported by comfy_entrypoint)
        return importlib.import_module(self._pack.__name__ + ".nodes").NODE_CLASS_MAPPINGS[class_name]()

    def base_model(self, size: str, dtype=None):
        from hosts import _tiny_weights as tw
        from hosts import comfyui_host as ch
        if size == "tiny":
            return tw.make_tiny_sdxl(seed=ch.MODEL_SEED["sdxl"], **ch.TINY["sdxl"], device=self.device,
                                     dtype=dtype or torch.float32)
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        return tw.make_full_sdxl(seed=0, dtype=dtype, device=self.device)

    def model_channels(self, size: str) -> int:
        from hosts import comfyui_host as ch
        return ch.TINY["sdxl"]["model_channels"] if size == "tiny" else 320

    def _ipadapter_file(self, size: str) -> str:
        if size not in self._ipa_files:
            import folder_paths
            from hosts import _tiny_weights as tw
            folder = folder_paths.get_folder_paths("ipadapter")[0]
            fname = f"bench-random-ip-adapter_sdxl_{size}.safetensors"
            tw.write_random_ipadapter(os.path.join(folder, fname), "sdxl", self.model_channels(size),
                                      clip_embeddings_dim=IPA_CLIP_DIM[size], seed=99)
            self._ipa_files[size] = fname
        return self._ipa_files[size]

    def apply_ipadapter(self, model, size: str, weight_type: str = "style transfer", seed: int = 0):
        """IPAdapterModelLoader + IPAdapterEmbeds (IPAdapter_plus's own code) with random precomputed embeds."""
        import nodes
        from hosts.comfyui_host import _NoClipVision
        pos_embed = torch.randn(1, IPA_CLIP_DIM[size], generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            loader = nodes.NODE_CLASS_MAPPINGS["IPAdapterModelLoader"]()
            ipadapter = getattr(loader, loader.FUNCTION)(self._ipadapter_file(size))[0]
            node = nodes.NODE_CLASS_MAPPINGS["IPAdapterEmbeds"]()
            out = getattr(node, node.FUNCTION)(model, ipadapter, pos_embed, 1.0, weight_type, 0.0, 1.0,
                                               neg_embed=None, attn_mask=None, clip_vision=_NoClipVision(),
                                               embeds_scaling="V only")
        return out[0]

    def conditioning(self, seed: int, tokens: int = 77) -> list:
        from hosts import _tiny_weights as tw
        g = torch.Generator().manual_seed(seed)
        cond = torch.randn(1, tokens, tw.SDXL_CONTEXT_DIM, generator=g)
        return [[cond, {"pooled_output": torch.randn(1, tw.SDXL_POOLED_DIM, generator=g)}]]

    def empty_latent(self, batch: int, size: int) -> dict:
        import nodes
        return nodes.EmptyLatentImage().generate(size, size, batch)[0]

    def ksampler(self, model, positive, negative, latent, *, seed: int, steps: int, cfg: float,
                 sampler_name: str = "euler", scheduler: str = "normal") -> torch.Tensor:
        import comfy.utils
        import nodes
        comfy.utils.set_progress_bar_enabled(False)
        with torch.inference_mode():  # as execution.PromptExecutor runs every node
            out = nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                        dict(latent))
        return out[0]["samples"]


# ---------------------------------------------------------------------------------------------------- stand-in
class Standin:
    name = "standin"

    def __init__(self, device: str = "auto"):
        if device == "cuda":
            raise SystemExit("the stand-in host runs on the CPU only; set COMFYUI_PATH for a GPU run")
        from hosts.standin_host import StandinHost
        self.host = StandinHost()
        self.device = torch.device("cpu")
        self.setup = "tests/hosts/standin_host.StandinHost"

    def describe(self) -> dict:
        return {"kind": "standin", "label": "STAND-IN (not ComfyUI)", "setup": self.setup,
                "note": "tests/standin re-implements only the ComfyUI surfaces the pack touches, and "
                        "tests/fakes/ipadapter_standin.py stands in for ComfyUI_IPAdapter_plus: timings are "
                        "indicative only."}

    def node(self, class_name: str):
        return self.host.node(class_name)

    def base_model(self, size: str, dtype=None):
        if size != "tiny":
            raise SystemExit("--size sdxl-full needs the real ComfyUI (set COMFYUI_PATH)")
        return self.host.tiny_model("sdxl")

    def apply_ipadapter(self, model, size: str, weight_type: str = "style transfer", seed: int = 0):
        with torch.inference_mode():
            return self.host.apply_ipadapter(model, arch="sdxl", weight_type=weight_type, seed=seed)

    def conditioning(self, seed: int, tokens: int = 77) -> list:
        return self.host.conditioning("sdxl", seed, tokens=tokens)

    def empty_latent(self, batch: int, size: int) -> dict:
        return self.host.empty_latent("sdxl", batch=batch, size=size)

    def ksampler(self, model, positive, negative, latent, *, seed: int, steps: int, cfg: float,
                 sampler_name: str = "euler", scheduler: str = "normal") -> torch.Tensor:
        return self.host.ksampler(model, positive, negative, latent, seed=seed, steps=steps, cfg=cfg,
                                  sampler_name=sampler_name, scheduler=scheduler)


def make_host(device: str = "auto") -> Any:
    if os.environ.get("COMFYUI_PATH"):
        return RealComfyUI(device)
    return Standin(device)
