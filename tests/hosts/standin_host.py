"""StandinHost: the unit tier. Runs the pack on tests/standin/comfy (a small re-implementation of the ComfyUI
surfaces the pack touches) and tests/fakes/ipadapter_standin.py (IPAdapter_plus's patching behaviour).

Tiny models (built once per arch, then handed out as fresh ``clone()``s):
* SDXL: real block layout (transformer_index 0..10, input 4,5,7,8 / middle 0 / output 0..5), context 2048,
  adm 2816, widths 32/64/128, dim_head 32; SD1.5: real layout (transformer_index 0..15), context 768,
  widths 32/64/128/128, 8 heads (real). SpatialTransformer depth = min(real depth, DEPTH_OVERRIDE = 1), the same
  reduction as the real-host tier: block_index is always 0 (SDXL's real 2- and 10-deep transformers lose
  indices >= 1; SD1.5 is unchanged). Patch keys for the missing indices may be registered but never run.
* weights initialised explicitly from fixed seeds (MODEL_SEED) with the real-host tier's init, so both tiers hold
  identical weights and plain KSampler runs agree bit for bit (pinned in tests/test_standin_semantics.py).
* torch runs single-threaded here unless OMP_NUM_THREADS is set (tiny tensors; on a busy 2-core box two
  threads per process were up to ~50x slower in wall time).
* The non-UNet model is a tiny stand-in ``Flux`` (4-channel, one joint attention layer): only for
  "is this a UNet" checks; the real tier's is a real 16-channel Flux.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
from pathlib import Path

import torch

try:
    from .base import Host
except ImportError:  # imported as a top-level module (tests/hosts on sys.path)
    from base import Host

REPO_ROOT = Path(__file__).resolve().parents[2]
STANDIN_DIR = REPO_ROOT / "tests" / "standin"
FAKES_DIR = REPO_ROOT / "tests" / "fakes"

DEPTH_OVERRIDE = 1
MODEL_CHANNELS = 32
# Same seeds and the same init function (tests/hosts/_tiny_weights.py: init_weights_) as ComfyUIHost, so both tiers
# hold identical tiny weights -- the stand-in then samples bit-identically to the real ComfyUI (pinned in
# tests/test_standin_semantics.py).
MODEL_SEED = {"sdxl": 1234, "sd15": 4321, "flux": 7}
CONTEXT_DIM = {"sdxl": 2048, "sd15": 768}


def _use_standin_comfy():
    """Put tests/standin first on sys.path; refuse if another ``comfy`` is already imported."""
    loaded = sys.modules.get("comfy")
    if loaded is not None:
        where = Path(getattr(loaded, "__file__", "") or "").resolve()
        if STANDIN_DIR.resolve() not in where.parents:
            raise RuntimeError(
                f"a real 'comfy' package is already imported from {where}; the stand-in host cannot share a process "
                "with it (run the unit tier without COMFYUI_PATH, in a fresh process)")
    if str(STANDIN_DIR) not in sys.path:
        sys.path.insert(0, str(STANDIN_DIR))


def _import_ipadapter_standin():
    """tests/fakes/ipadapter_standin.py, under the name tests use (``fakes.ipadapter_standin``, tests/ on sys.path)
    when importable, so test code and the host share one copy of its classes."""
    for name in ("fakes.ipadapter_standin", "tests.fakes.ipadapter_standin", "ipadapter_standin"):
        if name in sys.modules:
            return sys.modules[name]
    try:
        from fakes import ipadapter_standin
        if Path(ipadapter_standin.__file__).resolve() == (FAKES_DIR / "ipadapter_standin.py").resolve():
            return ipadapter_standin
    except ImportError:
        pass
    if str(FAKES_DIR) not in sys.path:
        sys.path.insert(0, str(FAKES_DIR))
    import ipadapter_standin
    return ipadapter_standin


def init_weights(module: torch.nn.Module, seed: int):
    """The real-host tier's init (_tiny_weights.init_weights_: weights ~ N(0, 1/fan_in) in named_parameters order,
    biases 0, norms 1/0); a local equivalent if that file is absent."""
    try:
        try:
            from . import _tiny_weights as tw
        except ImportError:
            import _tiny_weights as tw
    except ImportError:
        tw = None
    if tw is not None:
        tw.init_weights_(module, seed=seed)
        return
    g = torch.Generator().manual_seed(seed)
    norms = {id(p) for m in module.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))
             for p in m.parameters(recurse=False)}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if id(p) in norms:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


class StandinHost(Host):
    name = "standin"
    real_ipadapter = False

    def __init__(self, repo_root: Path | str = REPO_ROOT):
        _use_standin_comfy()
        if "OMP_NUM_THREADS" not in os.environ:
            # tiny tensors gain nothing from intra-op threads, and on a shared 2-core box two torch threads per
            # process made this tier ~7x slower (wall) than one; same thread count -> same bits, as everywhere
            torch.set_num_threads(1)
        self.repo_root = Path(repo_root).resolve()
        import comfy.model_management
        import comfy.model_patcher
        import comfy.sample
        import comfy.samplers
        import comfy.supported_models
        self._comfy_mm = comfy.model_management
        self._base = {}
        self._pack = None
        self._ipa = _import_ipadapter_standin()

    # --- the pack ----------------------------------------------------------------------------------------
    def pack(self):
        """Load ``<repo>/__init__.py`` like ComfyUI's nodes.load_custom_node: module name = the folder path with
        "." replaced by "_x_", registered in sys.modules before exec, folder NOT on sys.path."""
        if self._pack is None:
            module_path = str(self.repo_root)
            sys_module_name = module_path.replace(".", "_x_")
            if sys_module_name in sys.modules:
                self._pack = sys.modules[sys_module_name]
                return self._pack
            spec = importlib.util.spec_from_file_location(sys_module_name, os.path.join(module_path, "__init__.py"))
            # an __init__.py location makes this a package spec: relative imports resolve inside the folder
            assert spec.submodule_search_locations == [module_path], spec.submodule_search_locations
            module = importlib.util.module_from_spec(spec)
            sys.modules[sys_module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[sys_module_name]
                raise
            self._pack = module
        return self._pack

    # --- models and conditioning -----------------------------------------------------------------------
    def _base_model(self, arch: str):
        if arch not in self._base:
            import comfy.model_patcher
            import comfy.supported_models as sm
            cfg = sm.tiny_unet_config(arch, model_channels=MODEL_CHANNELS, depth_override=DEPTH_OVERRIDE)
            config = {"sdxl": sm.SDXL, "sd15": sm.SD15}[arch](cfg)
            model = config.get_model({}, device=torch.device("cpu"))
            init_weights(model.diffusion_model, MODEL_SEED[arch])
            model.eval()
            cpu = torch.device("cpu")
            self._base[arch] = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
        return self._base[arch]

    def tiny_model(self, arch: str = "sdxl"):
        if arch not in CONTEXT_DIM:
            raise ValueError(f"arch must be 'sdxl' or 'sd15', got {arch!r}")
        return self._base_model(arch).clone()

    def non_unet_model(self):
        if "flux" not in self._base:
            import comfy.model_patcher
            import comfy.supported_models as sm
            model = sm.Flux(dict(sm.Flux.unet_config)).get_model({}, device=torch.device("cpu"))
            init_weights(model.diffusion_model, MODEL_SEED["flux"])
            cpu = torch.device("cpu")
            self._base["flux"] = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
        return self._base["flux"].clone()

    def conditioning(self, arch: str, seed: int, tokens: int = 8) -> list:
        g = torch.Generator().manual_seed(seed)
        cond = torch.randn(1, tokens, CONTEXT_DIM[arch], generator=g)
        opts = {}
        if arch == "sdxl":
            opts["pooled_output"] = torch.randn(1, 1280, generator=g)
        return [[cond, opts]]

    def empty_latent(self, arch: str, batch: int = 1, size: int = 64) -> dict:
        return {"samples": torch.zeros(batch, 4, size // 8, size // 8)}

    # --- IP-Adapter --------------------------------------------------------------------------------------
    def apply_ipadapter(self, model, *, arch: str, weight: float = 1.0, weight_type: str = "style transfer",
                        start_at: float = 0.0, end_at: float = 1.0, negative_image: bool = False, mask=None,
                        seed: int = 0):
        # the cached random adapter of this architecture; style tokens from ``seed``; uncond tokens from a second
        # random "image" when negative_image, else the projector applied to zero features (non-zero)
        with torch.inference_mode():  # as the executor runs every node
            return self._ipa.apply_ipadapter(model, weight=weight, weight_type=weight_type, start_at=start_at,
                                             end_at=end_at, mask=mask, arch=arch, negative_image=negative_image,
                                             seed=seed)

    def model_sampling_edm(self, model, sigma_max: float = 120.0, sigma_min: float = 0.002):
        import comfy.model_sampling
        m = model.clone()
        sampling = comfy.model_sampling.ModelSamplingContinuousEDMEPS(model.model.model_config)
        sampling.set_parameters(sigma_min, sigma_max, 1.0)
        m.add_object_patch("model_sampling", sampling)
        return m

    def ip_tokens(self, model) -> dict:
        slots = model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
        for obj in slots.values():
            kws = getattr(obj, "kwargs", None)
            if isinstance(kws, list) and kws and "cond" in kws[0]:
                return {"cond": kws[0]["cond"], "uncond": kws[0]["uncond"]}
        raise ValueError("model carries no IP-Adapter patch")

    # --- sampling ----------------------------------------------------------------------------------------
    def ksampler(self, model, positive, negative, latent, *, seed=0, steps=4, cfg=5.0, sampler_name="euler",
                 scheduler="normal", denoise=1.0, noise_mask=None):
        import comfy.sample
        latent = dict(latent)
        if noise_mask is not None:
            latent["noise_mask"] = noise_mask
        with torch.inference_mode():  # ComfyUI executes every node under inference_mode
            out = comfy.sample.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                               latent, denoise=denoise)
        return out[0]["samples"].clone()  # a normal tensor, usable outside inference mode

    def ksampler_advanced(self, model, positive, negative, latent, *, add_noise=True, seed=0, steps=4, cfg=5.0,
                          sampler_name="euler", scheduler="normal", start_at_step=0, end_at_step=10000,
                          return_with_leftover_noise=False):
        """nodes.KSamplerAdvanced.sample: force_full_denoise unless leftover noise is returned, zero noise when
        add_noise is off, then common_ksampler."""
        import comfy.sample
        with torch.inference_mode():
            out = comfy.sample.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                               dict(latent), denoise=1.0, disable_noise=not add_noise,
                                               start_step=start_at_step, last_step=end_at_step,
                                               force_full_denoise=not return_with_leftover_noise)
        return out[0]

    def sampler_names(self):
        import comfy.samplers
        return list(comfy.samplers.IMPLEMENTED_SAMPLERS)

    @contextlib.contextmanager
    def force_split(self):
        mm = self._comfy_mm
        original = mm.get_free_memory
        mm.get_free_memory = lambda dev=None, torch_free_too=False: (0, 0) if torch_free_too else 0
        try:
            yield
        finally:
            mm.get_free_memory = original
