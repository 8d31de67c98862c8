#!/usr/bin/env python
"""StyleStudio benchmark: the cost of each StyleStudio node as a ratio against the same KSampler graph without it.

    python benchmarks/bench_stylestudio.py [--size tiny|sdxl-full] [--steps N] [--repeats R] [--batch B]
                                           [--json OUT.json] [--markdown OUT.md]

Runs on the real ComfyUI when COMFYUI_PATH is set (ComfyUI_IPAdapter_plus from IPADAPTER_PLUS_PATH), otherwise
on the test stand-in (clearly labelled). One process, one model, one graph (fixed seed, steps, resolution, euler /
normal, a random-weight IP-Adapter with weight type "style transfer"), in the configurations of CONFIGS. After one
baseline warm-up, every configuration gets a first run (its warm-up) that records the rows of every model call and
runs under torch.profiler (op counts, and on CPU the allocator's peak), then R timed rounds, interleaved (round r
runs all configurations in an order rotated by r, so drift and other load hit every configuration alike). See
benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _hosts  # noqa: E402

MB = 2.0 ** 20

# ------------------------------------------------------------------------------------------------ the graph
CONFIGS = [
    # key, label, what it is
    ("baseline", "baseline (IP-Adapter only)",
     "IPAdapterEmbeds (random adapter, 'style transfer') -> KSampler"),
    ("adain", "+ AdaIN",
     "StyleStudioCrossModalAdaIN(strength 1, 0..1) on the IP-Adapter model"),
    ("teacher", "+ Teacher (window {w})",
     "StyleStudioTeacherLayout(start 0, end {w}, share_cross_attention off, return_teacher off)"),
    ("teacher_rt", "+ Teacher ({w}), return_teacher",
     "StyleStudioTeacherLayout(0, {w}, off, return_teacher on): teacher rows computed for every step"),
    ("sg_equal", "+ Style Guidance, style_cfg = cfg",
     "StyleStudioStyleGuidance(style_cfg {cfg}, 0..1) with KSampler cfg {cfg}"),
    ("sg_split", "+ Style Guidance, style_cfg != cfg",
     "StyleStudioStyleGuidance(style_cfg {scfg}, 0..1) with KSampler cfg {cfg}: one extra branch per step"),
    ("all3", "AdaIN + Teacher ({w}) + Style Guidance (split)",
     "the three nodes stacked: AdaIN -> Teacher(0, {w}) -> StyleGuidance(style_cfg {scfg})"),
    ("official", "official teacher (emulated)",
     "Teacher(0, {w}, return_teacher on) = batch doubled for all steps, + every self-attention (attn1) computed "
     "as an explicit softmax(QK^T/sqrt(d))V map via attn1 replace patches"),
    ("baseline_x2", "baseline at double batch",
     "the baseline graph with latent batch 2B (reference for the teacher's memory target)"),
    ("baseline_explicit", "baseline, explicit self-attention",
     "the baseline with the same explicit-attention attn1 patches as 'official' (isolates the kernel's cost)"),
]

TARGETS_TIME = {"adain": 1.02, "teacher": 1.45, "sg_equal": 1.02, "sg_split": 1.5}
TEACHER_MEMORY_SLACK = 1.05

_EXPLICIT_CALLS = [0]


def explicit_attention(q, k, v, extra_options):
    """attn1 replace patch: attention with the N×M probability map materialised, as the official (diffusers)
    processor does it (``Attention.get_attention_scores`` then ``bmm``): scores = QKᵀ·d^-½ (one map), probs =
    softmax(scores) (a second map alive during the softmax), out = probs·V. Same dtype as the inputs."""
    _EXPLICIT_CALLS[0] += 1
    heads = extra_options["n_heads"]
    b, n, inner = q.shape
    d = inner // heads
    q = q.reshape(b, n, heads, d).permute(0, 2, 1, 3).reshape(b * heads, n, d)
    k = k.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d)
    v = v.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d)
    scores = torch.baddbmm(torch.empty(b * heads, n, k.shape[1], dtype=q.dtype, device=q.device), q,
                           k.transpose(-1, -2), beta=0, alpha=d ** -0.5)
    probs = scores.softmax(dim=-1)
    del scores
    out = torch.bmm(probs, v)
    return out.reshape(b, heads, n, d).permute(0, 2, 1, 3).reshape(b, n, inner)


def self_attention_keys(model) -> list[tuple]:
    """(block name, block id, index) of every BasicTransformerBlock, the key ComfyUI looks attn1 replace patches
    up under (BasicTransformerBlock.forward: (block[0], block[1], block_index))."""
    dm = model.model.diffusion_model
    keys = []
    for name, blocks in (("input", dm.input_blocks), ("middle", [dm.middle_block]), ("output", dm.output_blocks)):
        for i, blk in enumerate(blocks):
            for layer in blk:
                tb = getattr(layer, "transformer_blocks", None)
                if tb is not None:
                    keys.extend((name, i, j) for j in range(len(tb)))
    if not keys:
        raise RuntimeError("no transformer blocks found for the explicit-attention emulation")
    return keys


def with_explicit_self_attention(model):
    m = model.clone()
    for block_name, number, index in self_attention_keys(m):
        m.set_model_attn1_replace(explicit_attention, block_name, number, index)
    return m


class RowRecorder:
    """model_function_wrapper recording the batch rows of every model call (used in the first run only)."""

    def __init__(self):
        self.rows: list[int] = []

    def __call__(self, apply_model, args):
        self.rows.append(int(args["input"].shape[0]))
        return apply_model(args["input"], args["timestep"], **args["c"])


_VIEW_OPS = {"view", "_unsafe_view", "reshape", "expand", "slice", "select", "as_strided", "unsqueeze", "squeeze",
             "transpose", "permute", "t", "alias", "detach", "_reshape_alias", "split", "split_with_sizes", "chunk",
             "unbind", "narrow", "empty", "empty_like", "empty_strided", "lift_fresh", "_to_copy_noop"}
_ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention")
_MATMUL_CONV_OPS = {"mm", "bmm", "baddbmm", "addmm", "matmul", "linear", "convolution", "_convolution",
                    "cudnn_convolution", "mkldnn_convolution", "conv2d", "_conv_depthwise2d", "native_group_norm",
                    "native_layer_norm", "group_norm", "layer_norm"}


class HostReads(torch.overrides.TorchFunctionMode):
    """Counts the places a run reads tensor values back to the host (each one a device sync on a GPU): .item(),
    float()/int()/bool() of a tensor, .tolist(), .numpy(), and copies to the CPU (.cpu(), .to("cpu")). Counted
    the same on any device; a copy to the CPU followed by .item() on the copy counts once."""

    _READS = {"item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__"}

    def __init__(self):
        super().__init__()
        self.count = 0
        self._host_copies = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        source = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if source is None:
            return out
        if name in self._READS:
            if id(source) not in self._host_copies:
                self.count += 1
        elif name == "cpu" or (name == "to" and any(str(a) == "cpu" for a in list(args[1:]) + [kwargs.get("device")])):
            self.count += 1
            if isinstance(out, torch.Tensor):
                self._host_copies.add(id(out))
        elif name in ("__getitem__", "detach", "select") and id(source) in self._host_copies \
                and isinstance(out, torch.Tensor):
            self._host_copies.add(id(out))  # x.cpu()[0].item(): still the one copy
        return out


class OpCensus(torch.utils._python_dispatch.TorchDispatchMode):
    """What one sampling run dispatches, op by op (TorchDispatchMode sees every kernel call, on any device):
    attention kernels, and the elementwise/reduction ops whose output is activation-sized (at least the smallest
    spatial attention input of the run: rows × tokens × channels). Host reads are counted by HostReads."""

    def __init__(self):
        super().__init__()
        self.syncs = 0  # set from HostReads
        self.attention = 0
        self.attention_q_numel = []
        self.sized = []  # output numel of every op that is neither a view nor attention/matmul/conv/norm

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        out = func(*args, **kwargs)
        if any(a in name for a in _ATTENTION_OPS):
            self.attention += 1
            self.attention_q_numel.append(args[0].numel())
        elif name not in _VIEW_OPS and name not in _MATMUL_CONV_OPS and isinstance(out, torch.Tensor):
            self.sized.append(out.numel())
        return out

    def summary(self, model_calls: int, threshold: int) -> dict:
        calls = max(1, model_calls)
        return {"host_syncs_per_call": self.syncs / calls, "attention_calls_per_call": self.attention / calls,
                "full_size_ops_per_call": sum(1 for n in self.sized if n >= threshold) / calls,
                "full_size_threshold_numel": threshold}


class StepClock:
    """sampler_post_cfg_function that only records when each step's guidance finished (euler: one per step), so
    per-step durations come out of the timed runs at no cost. Returns the prediction unchanged."""

    def __init__(self):
        self.stamps: list[float] = []

    def __call__(self, args):
        self.stamps.append(time.perf_counter())
        return args["denoised"]


def build_configs(host, args) -> dict:
    w, cfg, scfg = args.window, args.cfg, args.style_cfg
    base = host.base_model(args.size)
    ip = host.apply_ipadapter(base, args.size, weight_type=args.weight_type, seed=args.seed + 1)
    adain_node = host.node("StyleStudioCrossModalAdaIN")
    teacher_node = host.node("StyleStudioTeacherLayout")
    sg_node = host.node("StyleStudioStyleGuidance")
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        models = {
            "baseline": ip,
            "adain": adain_node.execute(ip, 1.0, 0.0, 1.0)[0],
            "teacher": teacher_node.execute(ip, 0.0, w, False, False)[0],
            "teacher_rt": teacher_node.execute(ip, 0.0, w, False, True)[0],
            "sg_equal": sg_node.execute(ip, cfg, 0.0, 1.0)[0],
            "sg_split": sg_node.execute(ip, scfg, 0.0, 1.0)[0],
            "all3": sg_node.execute(teacher_node.execute(adain_node.execute(ip, 1.0, 0.0, 1.0)[0], 0.0, w, False,
                                                     False)[0], scfg, 0.0, 1.0)[0],
            "official": with_explicit_self_attention(teacher_node.execute(ip, 0.0, w, False, True)[0]),
            "baseline_x2": ip,
            "baseline_explicit": with_explicit_self_attention(ip),
        }
    batch = {k: (2 * args.batch if k == "baseline_x2" else args.batch) for k in models}
    out_batch = {k: (2 * batch[k] if k in ("teacher_rt", "official") else batch[k]) for k in models}
    return {k: {"model": models[k], "batch": batch[k], "out_batch": out_batch[k]} for k in models}


# ---------------------------------------------------------------------------------------------- measuring
def _proc_status() -> dict:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class Runner:
    def __init__(self, host, args, configs):
        self.host, self.args, self.configs = host, args, configs
        self.cuda = host.device.type == "cuda"
        self.pos = host.conditioning(args.seed + 10, tokens=77)
        self.neg = host.conditioning(args.seed + 20, tokens=77)
        self.latents = {b: host.empty_latent(b, args.resolution) for b in {c["batch"] for c in configs.values()}}
        # On the CPU every timed run also yields per-step durations (a StepClock appended to the post-cfg chain,
        # after StyleStudio's own). On CUDA a per-step clock would need a sync per step: whole runs only.
        self.clocks, self.timed_models = {}, {}
        for key, c in configs.items():
            if self.cuda:
                self.timed_models[key] = c["model"]
                continue
            m = c["model"].clone()
            self.clocks[key] = StepClock()
            m.set_model_sampler_post_cfg_function(self.clocks[key])
            self.timed_models[key] = m

    def sample(self, key, model=None):
        c = self.configs[key]
        return self.host.ksampler(model if model is not None else c["model"], self.pos, self.neg,
                                  self.latents[c["batch"]], seed=self.args.seed, steps=self.args.steps,
                                  cfg=self.args.cfg)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def first_run(self, key, with_profiler: bool = True) -> dict:
        """The configuration's first run (it doubles as its warm-up; one baseline run before all of them absorbs
        the one-time model load): a RowRecorder logs the rows of every model call, the output is checked, and
        torch.profiler records op counts and, on CPU, the CPU allocator's peak (bytes live above the level at
        the start of the call, integrated from the profiler's allocation records)."""
        from torch.profiler import ProfilerActivity, profile as torch_profile
        rec = RowRecorder()
        m = self.timed_models[key].clone()  # the timed runs' model (with its StepClock on the CPU)
        m.set_model_unet_function_wrapper(rec)
        _EXPLICIT_CALLS[0] = 0
        gc.collect()
        t0 = time.perf_counter()
        if with_profiler:
            with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=not self.cuda) as prof:
                out = self.sample(key, m)
                self.sync()
        else:
            out = self.sample(key, m)
            self.sync()
        res = {"rows_per_call": rec.rows, "explicit_attention_calls": _EXPLICIT_CALLS[0],
               "first_run_s": time.perf_counter() - t0}
        want = self.configs[key]["out_batch"]
        if out.shape[0] != want or not torch.isfinite(out).all():
            raise RuntimeError(f"{key}: output {tuple(out.shape)} (want batch {want}), finite="
                               f"{bool(torch.isfinite(out).all())}")
        if not with_profiler:
            return res
        counts: dict[str, int] = {}
        mem = []
        for e in prof.profiler.kineto_results.events():
            name = e.name()
            if name == "[memory]":
                if str(e.device_type()).endswith("CPU"):
                    mem.append((e.start_ns(), e.nbytes()))
                continue
            counts[name] = counts.get(name, 0) + 1
        mem.sort()
        cum = list(itertools.accumulate(n for _, n in mem))
        steps = self.args.steps
        res.update({
            "aten_ops_per_step": sum(v for k, v in counts.items() if k.startswith("aten::")) / steps,
            "sdpa_calls_per_step": counts.get("aten::scaled_dot_product_attention", 0) / steps,
            "softmax_calls_per_step": counts.get("aten::softmax", 0) / steps,
            "bmm_calls_per_step": (counts.get("aten::bmm", 0) + counts.get("aten::baddbmm", 0)) / steps})
        if not self.cuda:
            res["cpu_alloc_peak_bytes"] = max([0] + cum)
        return res

    def census(self, key) -> dict:
        """One more run of the configuration under OpCensus (not timed): per model (UNet) call, the host syncs,
        the attention kernels and the activation-sized ops. The size threshold is the smallest spatial attention
        input of the baseline's run, so every configuration is counted against the same size."""
        rec = RowRecorder()
        m = self.configs[key]["model"].clone()
        m.set_model_unet_function_wrapper(rec)
        with HostReads() as reads, OpCensus() as census:
            self.sample(key, m)
            self.sync()
        census.syncs = reads.count
        if key == "baseline" or not hasattr(self, "_census_threshold"):
            self._census_threshold = min(census.attention_q_numel) if census.attention_q_numel else 1
        return census.summary(len(rec.rows), self._census_threshold)

    def timed(self, key) -> dict:
        gc.collect()
        rec = {}
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        rss_ok = _reset_rss_peak()
        rss0 = _proc_status().get("VmRSS")
        clock = self.clocks.get(key)
        if clock is not None:
            clock.stamps.clear()
        self.sync()
        c0, t0 = time.process_time(), time.perf_counter()
        self.sample(key, self.timed_models[key])
        self.sync()
        t1, c1 = time.perf_counter(), time.process_time()
        rec["wall_s"], rec["cpu_s"] = t1 - t0, c1 - c0
        if clock is not None and len(clock.stamps) == self.args.steps:
            stamps = [t0] + clock.stamps
            rec["step_s"] = [b - a for a, b in zip(stamps, stamps[1:])]
            rec["tail_s"] = t1 - clock.stamps[-1]
        if self.cuda:
            peak = torch.cuda.max_memory_allocated()
            rec["cuda_peak_bytes"], rec["cuda_peak_delta_bytes"] = peak, peak - before
        if rss_ok and rss0 is not None:
            rec["rss_peak_delta_bytes"] = _proc_status().get("VmHWM", rss0) - rss0
        return rec


def _stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "min": xs[0], "max": xs[-1], "n": len(xs)}


# ------------------------------------------------------------------------------------------------- report
def machine_info(host) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError):
        pass
    info = {"cpu": cpu, "cores": cores, "torch_threads": torch.get_num_threads(), "ram_gb": mem_gb,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "device": str(host.device)}
    if host.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(host.device)
        info["cuda"] = torch.version.cuda
    if info["device"] == "cpu":
        n = torch.get_num_threads()
        info["summary"] = f"{cores}-core CPU ({cpu}), {n} torch thread{'s' if n != 1 else ''}, torch {torch.__version__}"
    else:
        info["summary"] = f"{info['gpu']}, torch {torch.__version__} (CUDA {info['cuda']})"
    return info


def analyse(results: dict, args, cuda: bool) -> dict:
    base = results["baseline"]
    base_rows = base["rows_per_call"]
    r2 = None
    if "baseline_x2" in results:
        r2 = results["baseline_x2"]["time_ms_per_step"]["median"] / base["time_ms_per_step"]["median"]
    for key, r in results.items():
        t = r["time_ms_per_step"]
        r["ratio_median"] = t["median"] / base["time_ms_per_step"]["median"]
        r["ratio_min"] = t["min"] / base["time_ms_per_step"]["min"]
        r["ratio_cpu_time"] = r["cpu_ms_per_step"]["median"] / base["cpu_ms_per_step"]["median"]
        if r.get("filtered_ms_per_step") and base.get("filtered_ms_per_step"):
            r["ratio_filtered"] = r["filtered_ms_per_step"] / base["filtered_ms_per_step"]
        r["model_calls"] = len(r["rows_per_call"])
        r["rows_over_baseline"] = [x / y for x, y in zip(r["rows_per_call"], base_rows)] \
            if len(r["rows_per_call"]) == len(base_rows) else None
        # what batch size alone predicts (linear in rows between B and 2B, from baseline_x2's measured cost)
        if r2 is not None and r["rows_over_baseline"] and not r["explicit_attention_calls"]:
            fr = r["rows_over_baseline"]
            r["batch_only_expectation"] = sum(1 + (x - 1) * (r2 - 1) for x in fr) / len(fr)
        if key in ("teacher", "teacher_rt", "official", "all3"):
            big = 2 * base_rows[0]
            r["teacher_rows_calls"] = sum(1 for x in r["rows_per_call"] if x >= big)
    mem_key = "cuda_peak_delta_bytes" if cuda else "cpu_alloc_peak_bytes"
    for r in results.values():
        r["memory_metric"] = r.get(mem_key)

    targets = []

    def time_target(key, limit, what):
        if key not in results:
            return
        v = results[key]["ratio_median"]
        f = results[key].get("ratio_filtered")
        t = {"target": what, "config": key, "measured": f"{v:.3f}x", "limit": f"<= {limit:.2f}x", "pass": v <= limit}
        if f is not None:
            t["measured_filtered"] = f"{f:.3f}x"
            t["pass_filtered"] = f <= limit
        targets.append(t)
    time_target("adain", TARGETS_TIME["adain"], "AdaIN sampling time")
    if "adain" in results and base.get("sdpa_calls_per_step") is not None:
        a, b = results["adain"]["sdpa_calls_per_step"], base["sdpa_calls_per_step"]
        targets.append({"target": "AdaIN: no extra attention computation", "config": "adain",
                        "measured": f"{a:g} attention calls/step", "limit": f"= baseline ({b:g})", "pass": a <= b})
    time_target("teacher", TARGETS_TIME["teacher"], f"Teacher ({args.window}) sampling time")
    if "teacher" in results and "baseline_x2" in results and results["teacher"]["memory_metric"] is not None:
        m, m2 = results["teacher"]["memory_metric"], results["baseline_x2"]["memory_metric"]
        targets.append({"target": f"Teacher ({args.window}) peak memory", "config": "teacher",
                        "measured": f"{m / MB:.1f} MB", "limit": f"<= baseline@2B {m2 / MB:.1f} MB x "
                        f"{TEACHER_MEMORY_SLACK} = {m2 * TEACHER_MEMORY_SLACK / MB:.1f} MB",
                        "pass": m <= m2 * TEACHER_MEMORY_SLACK})
    if "teacher" in results and base.get("softmax_calls_per_step") is not None:
        a, b = results["teacher"]["softmax_calls_per_step"], base["softmax_calls_per_step"]
        targets.append({"target": "Teacher: no explicit NxN attention map", "config": "teacher",
                        "measured": f"{a:g} softmax/step", "limit": f"= baseline ({b:g})", "pass": a <= b})
    time_target("sg_equal", TARGETS_TIME["sg_equal"], "Style Guidance, style_cfg = cfg: time (1.00x, noise 2 %)")
    if "sg_equal" in results:
        same = results["sg_equal"]["rows_per_call"] == base_rows
        targets.append({"target": "Style Guidance, style_cfg = cfg: no extra model evaluation", "config": "sg_equal",
                        "measured": f"rows/call {_rows_summary(results['sg_equal']['rows_per_call'])}",
                        "limit": f"= baseline ({_rows_summary(base_rows)})", "pass": same})
    time_target("sg_split", TARGETS_TIME["sg_split"], "Style Guidance, style_cfg != cfg: time")
    return {"targets": targets, "memory_metric": mem_key, "baseline_x2_time_ratio": r2}


def _rows_summary(rows: list[int]) -> str:
    out = []
    for v, g in itertools.groupby(rows):
        n = len(list(g))
        out.append(f"{v}x{n}" if n > 1 else f"{v}")
    return " ".join(out)


def _fmt_mb(b):
    return "n/a" if b is None else f"{b / MB:,.1f}"


def markdown(report: dict) -> str:
    meta, res, an = report["meta"], report["results"], report["analysis"]
    a = meta["args"]
    cuda = meta["machine"]["device"].startswith("cuda")
    lines = [f"### StyleStudio benchmark: {a['size']} SDXL, {a['resolution']} px, {a['steps']} steps, batch "
             f"{a['batch']}, cfg {a['cfg']}",
             "",
             f"- host: {meta['host']['label']}",
             f"- machine: {meta['machine']['summary']}",
             f"- pack code: commit {meta['pack'].get('commit')}"
             + (" + uncommitted changes" if meta["pack"].get("uncommitted_changes") else "")
             + f" (content hash {meta['pack']['code_sha256']})",
             f"- graph: KSampler euler/normal, seed {a['seed']}, 77-token random conditioning, random-weight "
             f"IP-Adapter ('{a['weight_type']}'); teacher window {a['window']}; split style_cfg {a['style_cfg']}",
             f"- timing: {a['repeats']} timed rounds, interleaved, after one baseline warm-up and one first "
             f"(profiled) run per configuration; wall time of the whole KSampler call / steps"
             + ("; torch.cuda.synchronize() around each run" if cuda else ""),
             f"- load average at start / end: {meta['loadavg_start']} / {meta.get('loadavg_end')}",
             *[f"- **warning:** {w}" for w in meta.get("warnings", [])],
             f"- date: {meta['date']}; wall time of the benchmark: {meta.get('total_s', 0):.0f} s",
             "",
             "| configuration | rows per model call | ms/step median | IQR | min–max | × baseline (median) | "
             "× baseline (min) | × baseline (CPU time) | × baseline (per-step minima) | batch-only expectation |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in res.items():
        t = r["time_ms_per_step"]
        exp = r.get("batch_only_expectation")
        lines.append(f"| {r['label']} | {_rows_summary(r['rows_per_call'])} | {t['median']:.1f} | "
                     f"{t['q1']:.1f}–{t['q3']:.1f} | {t['min']:.1f}–{t['max']:.1f} | **{r['ratio_median']:.3f}×** | "
                     f"{r['ratio_min']:.3f}× | {r['ratio_cpu_time']:.3f}× | {_fmt(r.get('ratio_filtered'), '.3f')}"
                     f"{'×' if r.get('ratio_filtered') else ''} | {'' if exp is None else f'{exp:.3f}×'} |")
    mem_title = ("CUDA peak allocated − allocated before (MB)" if cuda
                 else "CPU allocator peak above start (MB)")
    lines += ["", f"| configuration | {mem_title} | × baseline@2B | "
              + ("CUDA peak total (MB) | " if cuda else "")
              + "attention (SDPA) calls/step | explicit softmax calls/step | aten ops/step |",
              "|---|---|---|---|---|---|" + ("---|" if cuda else "")]
    m2 = res.get("baseline_x2", {}).get("memory_metric")
    for key, r in res.items():
        m = r.get("memory_metric")
        rel = f"{m / m2:.3f}×" if (m is not None and m2) else "n/a"
        other = f"{_fmt_mb(r.get('cuda_peak_bytes_max'))} | " if cuda else ""
        lines.append(f"| {r['label']} | {_fmt_mb(m)} | {rel} | {other}"
                     f"{_fmt(r.get('sdpa_calls_per_step'))} | {_fmt(r.get('softmax_calls_per_step'))} | "
                     f"{_fmt(r.get('aten_ops_per_step'), '.0f')} |")
    if any("per_call" in r for r in res.values()):
        base_pc = res.get("baseline", {}).get("per_call", {})
        thr = base_pc.get("full_size_threshold_numel")
        lines += ["", f"Per model (UNet) call, counted op by op (TorchDispatchMode; activation-sized = output of at "
                  f"least {thr} elements, the smallest spatial attention input; views, matmuls, convolutions and "
                  "norms not counted):", "",
                  "| configuration | host syncs | activation-sized ops | added vs baseline | attention calls |",
                  "|---|---|---|---|---|"]
        for key, r in res.items():
            pc = r.get("per_call")
            if not pc:
                continue
            added = pc["full_size_ops_per_call"] - base_pc.get("full_size_ops_per_call", 0.0)
            lines.append(f"| {r['label']} | {pc['host_syncs_per_call']:.1f} | {pc['full_size_ops_per_call']:.1f} | "
                         f"{added:+.1f} | {pc['attention_calls_per_call']:.1f} |")
    lines += ["", "| target | measured (median) | limit | result | per-step minima | result (per-step minima) |",
              "|---|---|---|---|---|---|"]
    for t in an["targets"]:
        pf = t.get("pass_filtered")
        lines.append(f"| {t['target']} | {t['measured']} | {t['limit']} | {'PASS' if t['pass'] else '**MISS**'} | "
                     f"{t.get('measured_filtered', '')} | {'' if pf is None else ('PASS' if pf else '**MISS**')} |")
    if "official" in res and "teacher" in res:
        o, t = res["official"], res["teacher"]
        lines += ["", "Teacher: official cost (emulated) vs this pack", "",
                  "| | × baseline time | memory (MB) | teacher rows computed in | explicit maps |",
                  "|---|---|---|---|---|",
                  f"| official (batch ×2 every step, explicit N×N maps) | {o['ratio_median']:.3f}× | "
                  f"{_fmt_mb(o.get('memory_metric'))} | {o.get('teacher_rows_calls')} of {o['model_calls']} calls | "
                  f"{o['explicit_attention_calls']} attn1 calls |",
                  f"| StyleStudio pack (window {a['window']}) | {t['ratio_median']:.3f}× | "
                  f"{_fmt_mb(t.get('memory_metric'))} | {t.get('teacher_rows_calls')} of {t['model_calls']} calls | "
                  "none |"]
    return "\n".join(lines) + "\n"


def _fmt(v, spec="g"):
    return "n/a" if v is None else format(v, spec)


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["tiny", "sdxl-full"], default="tiny",
                   help="tiny: the host tier's tiny SDXL (real block layout, 32 channels, depth 1; CPU default). "
                        "sdxl-full: the real SDXL-1024 UNet with random weights (fp16 on CUDA)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (tiny 10, sdxl-full 30: euler/normal then puts exactly 40 %% of the steps "
                        "inside window 0.4)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds after the first run (tiny 3, sdxl-full 5)")
    p.add_argument("--batch", type=int, default=1, help="latent batch B")
    p.add_argument("--resolution", type=int, default=None, help="pixels (tiny 512 -> 64x64 latent; sdxl-full 1024)")
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--style-cfg", type=float, default=7.5, help="style_cfg of the split Style Guidance config")
    p.add_argument("--window", type=float, default=0.4, help="teacher end_at")
    p.add_argument("--weight-type", default="style transfer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads after the host set-up (default: the host's choice; the real host on "
                        "the CPU and the stand-in use 1, STYLESTUDIO_HOST_THREADS overrides the real host's)")
    p.add_argument("--configs", default=None,
                   help="comma-separated subset of: " + ", ".join(k for k, _, _ in CONFIGS)
                        + " (baseline always runs)")
    p.add_argument("--allow-cpu-full", action="store_true", help="allow --size sdxl-full without CUDA (smoke test)")
    p.add_argument("--no-profile", action="store_true", help="skip the profiler run (no op counts / CPU memory)")
    p.add_argument("--no-census", action="store_true",
                   help="skip the op census run (per model call: host syncs, activation-sized ops, attention calls)")
    p.add_argument("--json", default=None, help="write the full report as JSON")
    p.add_argument("--markdown", default=None, help="write the Markdown tables to this file too")
    args = p.parse_args(argv)
    full = args.size == "sdxl-full"
    args.steps = args.steps or (30 if full else 10)
    args.repeats = args.repeats or (5 if full else 3)
    args.resolution = args.resolution or (1024 if full else 512)
    if args.style_cfg == args.cfg:
        p.error("--style-cfg must differ from --cfg (the split configuration)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    load_start = _loadavg()
    host = _hosts.make_host(args.device)
    if args.threads:  # after the host set-up, which fixes its own count on the CPU
        torch.set_num_threads(args.threads)
    if args.size == "sdxl-full" and host.name == "standin":
        raise SystemExit("--size sdxl-full needs the real ComfyUI (set COMFYUI_PATH) and a CUDA GPU")
    if args.size == "sdxl-full" and host.device.type != "cuda":
        if not args.allow_cpu_full:
            raise SystemExit("--size sdxl-full needs a CUDA GPU: on the CPU the fp32 UNet (10.4 GB of weights) plus "
                             "activations at 1024 px exceed a 24 GB machine (such a run was OOM-killed). Pass "
                             "--allow-cpu-full (with a small --resolution) for a smoke test on a large-memory CPU.")
        print("warning: --size sdxl-full on the CPU (fp32): a smoke test, not a benchmark", file=sys.stderr)
    keys = [k for k, _, _ in CONFIGS]
    if args.configs:
        want = {s.strip() for s in args.configs.split(",") if s.strip()}
        unknown = want - set(keys)
        if unknown:
            raise SystemExit(f"unknown configuration(s): {', '.join(sorted(unknown))}")
        keys = [k for k in keys if k == "baseline" or k in want]
    configs = {k: v for k, v in build_configs(host, args).items() if k in keys}
    runner = Runner(host, args, configs)
    fmt = {"w": args.window, "cfg": args.cfg, "scfg": args.style_cfg}
    meta = {"host": host.describe(), "machine": machine_info(host), "pack": pack_state(), "args": vars(args),
            "loadavg_start": load_start, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([os.path.relpath(sys.argv[0])] + (sys.argv[1:] if argv is None else list(argv)))}
    print(f"host: {meta['host']['label']}", flush=True)
    print(f"machine: {meta['machine']['summary']}", flush=True)
    busy = _busy_warning(meta["machine"], load_start)
    if busy:
        meta["warnings"] = [busy]
        print("WARNING: " + busy, file=sys.stderr, flush=True)

    runner.sample("baseline")  # one-time costs (model load, lazy initialisation) land here
    results = {}
    for k in keys:
        lab = next(l for kk, l, _ in CONFIGS if kk == k).format(**fmt)
        desc = next(d for kk, _, d in CONFIGS if kk == k).format(**fmt)
        results[k] = {"label": lab, "description": desc, **runner.first_run(k, with_profiler=not args.no_profile)}
        print(f"  first run {k:18s} {results[k]['first_run_s']:7.2f} s  rows/call "
              f"{_rows_summary(results[k]['rows_per_call'])}", flush=True)
        if not args.no_census:
            results[k]["per_call"] = runner.census(k)
    samples = {k: [] for k in keys}
    for r in range(args.repeats):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            samples[k].append(runner.timed(k))
        print(f"  round {r + 1}/{args.repeats} done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    for k in keys:
        s = samples[k]
        res = results[k]
        res["time_ms_per_step"] = _stats([x["wall_s"] * 1000 / args.steps for x in s])
        res["cpu_ms_per_step"] = _stats([x["cpu_s"] * 1000 / args.steps for x in s])
        res["samples_wall_s"] = [x["wall_s"] for x in s]
        steps_ok = [x for x in s if "step_s" in x]
        if len(steps_ok) == len(s) and s:
            # noise-filtered cost: for every step index the fastest of the R rounds (load from other processes only
            # ever adds time), summed over the steps, plus the fastest run tail (after the last step)
            per_step_min = [min(x["step_s"][i] for x in steps_ok) for i in range(args.steps)]
            res["step_min_ms"] = [v * 1000 for v in per_step_min]
            res["filtered_ms_per_step"] = (sum(per_step_min) + min(x["tail_s"] for x in steps_ok)) * 1000 / args.steps
        if runner.cuda:
            res["cuda_peak_bytes_max"] = max(x["cuda_peak_bytes"] for x in s)
            res["cuda_peak_delta_bytes"] = max(x["cuda_peak_delta_bytes"] for x in s)
        rss = [x["rss_peak_delta_bytes"] for x in s if "rss_peak_delta_bytes" in x]
        if rss:
            res["rss_peak_delta_bytes_median"] = statistics.median(rss)
    analysis = analyse(results, args, runner.cuda)
    meta["loadavg_end"] = _loadavg()
    meta["total_s"] = time.perf_counter() - t_start
    report = {"meta": meta, "results": results, "analysis": analysis}
    md = markdown(report)
    print()
    print(md)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w") as f:
            f.write(md)
    return report


def pack_state() -> dict:
    """Which code was measured: the repository's commit, whether the pack's files differ from it, and a hash of
    their current content (nodes/*.py, stylestudio_core/*.py, __init__.py)."""
    import glob
    import hashlib
    import subprocess
    root = _hosts.REPO_ROOT
    files = sorted(glob.glob(os.path.join(root, "nodes", "*.py")) + glob.glob(os.path.join(root, "stylestudio_core",
                                                                                        "*.py"))
                   + [os.path.join(root, "__init__.py")])
    h = hashlib.sha256()
    for f in files:
        h.update(os.path.relpath(f, root).encode())
        with open(f, "rb") as fh:
            h.update(fh.read())
    out = {"code_sha256": h.hexdigest()[:12]}
    try:
        out["commit"] = subprocess.run(["git", "-C", root, "rev-parse", "--short=8", "HEAD"], capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
        st = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "nodes", "stylestudio_core",
                             "__init__.py"], capture_output=True, text=True, timeout=10).stdout
        out["uncommitted_changes"] = bool(st.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _busy_warning(machine: dict, load: str | None) -> str | None:
    if not load:
        return None
    load1 = float(load.split()[0])
    if machine["device"] == "cpu" and load1 > 1.0:
        return (f"load average {load1:.2f} on {machine['cores']} cores before the run: other processes compete for the "
                "CPU, so wall times are inflated and noisy (the ratios of the interleaved rounds, and the min and "
                "CPU-time columns, are the more robust figures)")
    return None


def _loadavg():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return None


if __name__ == "__main__":
    main()
