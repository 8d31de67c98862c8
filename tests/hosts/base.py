"""The contract every test host implements.

A *host* is what the behavioural tests sample through. There are two:

* ``StandinHost`` (tests/hosts/standin_host.py): a small, honest re-implementation of exactly the ComfyUI
  surfaces the pack touches (tests/standin/comfy/...), used when no real ComfyUI is available (CI).
* ``ComfyUIHost`` (tests/hosts/comfyui_host.py): the real ComfyUI checkout at ``$COMFYUI_PATH`` (and the real
  ComfyUI_IPAdapter_plus at ``$IPADAPTER_PLUS_PATH`` when set), with tiny random-weight models on CPU.

Only one host lives in a pytest process (both provide the top-level ``comfy`` package). Tests receive it through
the session fixture ``host`` (tests/conftest.py) and must only use the methods below, so the same test runs on
both tiers. Everything returned is a real ComfyUI object on the real host and its stand-in twin otherwise.
"""
from __future__ import annotations

import contextlib
from typing import Any


class Host:
    #: "standin" or "comfyui"
    name: str = "abstract"
    #: True when apply_ipadapter goes through ComfyUI_IPAdapter_plus's own code
    real_ipadapter: bool = False

    # --- the pack --------------------------------------------------------------------------------------
    def pack(self) -> Any:
        """The pack's top-level module, loaded exactly the way ComfyUI loads a custom node folder
        (``__init__.py`` under a mangled module name, folder not on sys.path). Loaded once per process."""
        raise NotImplementedError

    def node_classes(self) -> dict:
        """The pack's ``{node id: class}``: ``NODE_CLASS_MAPPINGS`` of the loaded pack's ``nodes`` subpackage (its
        registry, which its ``comfy_entrypoint()`` hands to ComfyUI; the pack's top level has no
        NODE_CLASS_MAPPINGS on purpose, and imports ``nodes`` only when the entrypoint runs)."""
        import importlib
        return importlib.import_module(self.pack().__name__ + ".nodes").NODE_CLASS_MAPPINGS

    def node(self, class_name: str) -> Any:
        """An *instance* of ``node_classes()[class_name]`` (V3 nodes: ``execute`` is a classmethod; ComfyUI calls
        ``getattr(node, node.FUNCTION)(**inputs)``)."""
        return self.node_classes()[class_name]()

    # --- models and conditioning -----------------------------------------------------------------------
    def tiny_model(self, arch: str = "sdxl") -> Any:
        """A ModelPatcher of a tiny random-weight UNet with the real block layout of ``arch`` ("sdxl" or
        "sd15"): same patch keys / transformer_index values as the real architecture (see host.md §1),
        weights explicitly initialised from a fixed seed (identical on every call), CPU, fp32.
        Each call returns a fresh ``clone()`` of a cached base patcher."""
        raise NotImplementedError

    def non_unet_model(self) -> Any:
        """A ModelPatcher whose diffusion model is NOT a UNet (e.g. a tiny DiT / Flux-like model, or any
        object the real host would load for such a family). Only used to check error messages."""
        raise NotImplementedError

    def conditioning(self, arch: str, seed: int, tokens: int = 8) -> list:
        """A ComfyUI CONDITIONING list ``[[cond_tensor (1, tokens, context_dim), {...}]]`` with random
        values from ``seed``; for SDXL the dict carries ``pooled_output`` (1, 1280) (and whatever else the
        host needs to build ``y``)."""
        raise NotImplementedError

    def empty_latent(self, arch: str, batch: int = 1, size: int = 64) -> dict:
        """``{"samples": zeros(batch, 4, size // 8, size // 8)}`` as EmptyLatentImage gives."""
        raise NotImplementedError

    def apply_ipadapter(self, model: Any, *, arch: str, weight: float = 1.0,
                        weight_type: str = "style transfer", start_at: float = 0.0, end_at: float = 1.0,
                        negative_image: bool = False, mask: Any = None, seed: int = 0) -> Any:
        """Clone ``model`` and attach a random-weight IP-Adapter exactly the way ComfyUI_IPAdapter_plus does
        (Attn2Replace objects in ``patches_replace["attn2"]``, ``.add`` when a slot is taken). ``weight_type``
        is one of IPAdapter_plus's names ("linear", "style transfer", "composition", "style and composition",
        "style transfer precise"). ``negative_image``: give an image_negative, so the uncond image tokens are
        the negative image's embedding instead of the adapter's zero-image uncond. ``mask``: an attention
        mask (H, W) or (1, H, W) in [0, 1] in pixel space. ``seed`` selects the (random) style tokens."""
        raise NotImplementedError

    def ip_tokens(self, model: Any) -> dict:
        """For a model returned by apply_ipadapter: ``{"cond": tensor, "uncond": tensor}`` — the image tokens
        its first IP patch feeds for the cond and uncond branches (to check which rows got which)."""
        raise NotImplementedError

    # --- sampling ----------------------------------------------------------------------------------------
    def ksampler(self, model: Any, positive: list, negative: list, latent: dict, *, seed: int = 0,
                 steps: int = 4, cfg: float = 5.0, sampler_name: str = "euler", scheduler: str = "normal",
                 denoise: float = 1.0, noise_mask: Any = None) -> Any:
        """Run the KSampler node's code path (``nodes.common_ksampler`` on the real host) and return the
        output latent tensor (``out[0]["samples"]``). ``noise_mask`` (B or 1, H, W) becomes the latent's
        ``noise_mask`` (inpainting)."""
        raise NotImplementedError

    def ksampler_advanced(self, model: Any, positive: list, negative: list, latent: dict, *, add_noise: bool = True,
                          seed: int = 0, steps: int = 4, cfg: float = 5.0, sampler_name: str = "euler",
                          scheduler: str = "normal", start_at_step: int = 0, end_at_step: int = 10000,
                          return_with_leftover_noise: bool = False) -> dict:
        """Run the KSamplerAdvanced node's code path and return its whole output LATENT dict (what the next
        sampler of a split schedule receives)."""
        raise NotImplementedError

    def sampler_names(self) -> list[str]:
        """Sampler names this host can run (real host: all of KSampler's; stand-in: at least
        "euler", "euler_ancestral", "dpmpp_2m", "heun")."""
        raise NotImplementedError

    @contextlib.contextmanager
    def force_split(self):
        """Inside this context every calc_cond_batch chunk runs as its own model forward (as ComfyUI does when
        memory is short): ``cond_or_uncond`` is then ``[1]`` and ``[0]`` in separate calls."""
        raise NotImplementedError
        yield

    def model_sampling_edm(self, model: Any, sigma_max: float = 120.0, sigma_min: float = 0.002) -> Any:
        """What ComfyUI's ModelSamplingContinuousEDM node (sampling "eps") returns for ``model``: a clone whose
        "model_sampling" object patch is a continuous EDM schedule between sigma_min and sigma_max."""
        raise NotImplementedError

    def percent_to_sigma(self, model: Any, percent: float) -> float:
        return float(model.get_model_object("model_sampling").percent_to_sigma(percent))
