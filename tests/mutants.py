"""Mutation check: deliberately wrong changes that the suite CI runs must catch.

Each mutant replaces one exact snippet of the pack's code (in a temporary copy of the repository, never in the
checkout), then runs the tests that should notice, on the unit tier and, when a host is configured, on the
host tier. A mutant is killed when a tier's tests fail; the script exits non-zero if any mutant survives every
tier it ran, or if a snippet is no longer in the code (the mutant went stale: update it with the code).

    python tests/mutants.py                       # unit tier only (.venv, as tests/run.sh makes it)
    COMFYUI_PATH=... IPADAPTER_PLUS_PATH=... python tests/mutants.py --host-python .venv-host/bin/python
    python tests/mutants.py --list                # what the mutants are
    python tests/mutants.py -k brownian           # only mutants whose name contains 'brownian'

The host tier is what users run, so a mutant the unit tier misses is still reported per tier.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    why: str        # the method fact it breaks
    path: str       # file, relative to the repository root
    old: str        # exact snippet, must occur once
    new: str
    tests: tuple    # pytest targets that must catch it


MUTANTS = (
    Mutant("adain-last-adapter-only",
           "AdaIN fuses the SUM of every active adapter's IP term (stacked adapters on one layer)",
           "stylestudio_core/routing.py",
           "style = term if style is None else style + term",
           "style = term",
           ("tests/test_routing_graphs.py", "tests/test_adain_node.py")),
    Mutant("share-cross-ignored-in-ip-layers",
           "share_cross_attention: student rows in IP layers fuse the TEACHER's text output with their style",
           "stylestudio_core/routing.py",
           "ts = layout.teachers(text) if borrow_text else layout.students(text)",
           "ts = layout.students(text)",
           ("tests/test_routing_graphs.py", "tests/test_teacher_node.py")),
    Mutant("brownian-seed-off-by-one",
           "SDE samplers: the students' per-step noise is what a run without teacher draws (same seed)",
           "nodes/patching.py",
           "positive.min(), sigmas.max(), seed=seed,",
           "positive.min(), sigmas.max(), seed=seed + 1,",
           ("tests/test_teacher_node.py",)),
    Mutant("teacher-lends-values-too",
           "Teacher coupling is Attn(Q_t, K_t, V_s): the student keeps its own values",
           "stylestudio_core/routing.py",
           "return borrowed, None, value",
           "return borrowed, None, layout.borrow_teacher(value)",
           ("tests/test_teacher_node.py", "tests/test_core_mechanism.py")),
    Mutant("adain-keeps-text-sigma",
           "AdaIN: normalised text takes the IP output's std",
           "stylestudio_core/adain.py",
           "scale = torch.where(sigma_t > 0, sigma_s / sigma_t.clamp(min=torch.finfo(f32).tiny), 0.0)",
           "scale = torch.where(sigma_t > 0, sigma_t / sigma_t.clamp(min=torch.finfo(f32).tiny), 0.0)",
           ("tests/test_core_adain.py", "tests/test_adain_node.py")),
    Mutant("style-guidance-sign",
           "split-scale guidance adds (g_style - g_text)·(ε(t,s⁺) − ε(t,s⁻))",
           "stylestudio_core/guidance.py",
           "return denoised + (style_scale - text_scale) * (cond - cond_style_negative)",
           "return denoised + (text_scale - style_scale) * (cond - cond_style_negative)",
           ("tests/test_style_guidance_node.py",)),
    Mutant("native-uncond-tokens-never-used",
           "native adapters: uncond rows (and the extra style branch) attend to the uncond / negative style tokens",
           "stylestudio_core/style_adapter.py",
           "pick = [1 if c == 1 else 0 for c in chunks]",
           "pick = [0 for c in chunks]",
           ("tests/test_native_adapter_nodes.py", "tests/test_native_adapter.py")),
    Mutant("clone-deep-copies-adapters",
           "a StyleStudio node never duplicates another node's adapter weights",
           "nodes/patching.py",
           "model.model_options = _SharedOnDeepcopy(options)",
           "model.model_options = options",
           ("tests/test_routing_graphs.py",)),
    Mutant("native-adds-to-the-input-models-slot",
           "the input MODEL is never mutated: applied after IPAdapter_plus, the native adapter stacks into its "
           "own copy of the slot object",
           "stylestudio_core/style_adapter.py",
           "current = slots[layer.patch_key] = _own_copy(current)",
           "slots[layer.patch_key] = current",
           ("tests/test_native_adapter_nodes.py",)),
    Mutant("native-weight-zero-is-an-error",
           "native weight 0 with AdaIN / Style Guidance gives the text-only result, not the no-adapter error",
           "nodes/apply_style_adapter.py",
           "m.model_options.setdefault(\"transformer_options\", {})[STYLE_OFF_KEY] = True",
           "m.model_options.setdefault(\"transformer_options\", {})",
           ("tests/test_native_adapter_nodes.py",)),
    Mutant("faceid-counted-as-style",
           "identity adapters (IPAdapter_plus FaceID) keep their plain sum and stay in the teacher",
           "stylestudio_core/routing.py",
           "if projection in _FACE_PROJECTIONS:",
           "if False:",
           ("tests/test_routing_graphs.py", "tests/test_core_routing.py")),
    Mutant("roles-position-ignored",
           "StyleStudio Adapter Roles: 'N=identity' makes adapter N identity (plain sum, kept in the teacher)",
           "stylestudio_core/routing.py",
           '    chosen = (roles.get("by_position") or {}).get(position)',
           "    chosen = None",
           ("tests/test_adapter_roles_node.py",)),
)

_IGNORE = shutil.ignore_patterns(".git", ".venv*", "__pycache__", ".pytest_cache", "*.egg-info", "build")


def _copy_with(mutant: Mutant, into: Path) -> None:
    shutil.copytree(REPO, into, ignore=_IGNORE, symlinks=True)
    target = into / mutant.path
    text = target.read_text()
    found = text.count(mutant.old)
    if found != 1:
        raise LookupError(f"{mutant.path}: snippet occurs {found} times (stale mutant, update tests/mutants.py): "
                          f"{mutant.old!r}")
    target.write_text(text.replace(mutant.old, mutant.new))


def _run(python: str, cwd: Path, tests: tuple, host_env: dict | None, timeout: int) -> tuple[bool, float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "IPADAPTER_PLUS_PATH")}
    env.update(host_env or {})
    t0 = time.monotonic()
    proc = subprocess.run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)
    tail = [line for line in proc.stdout.splitlines() if line.strip()][-1:] or ["(no output)"]
    return proc.returncode != 0, time.monotonic() - t0, tail[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--unit-python", default=str(REPO / ".venv" / "bin" / "python"),
                   help="python of the unit-tier venv (tests/run.sh makes .venv)")
    p.add_argument("--host-python", default=None,
                   help="python of the host venv; with COMFYUI_PATH set, each mutant also runs on the host tier")
    p.add_argument("-k", default="", help="only mutants whose name contains this")
    p.add_argument("--list", action="store_true")
    p.add_argument("--timeout", type=int, default=1200, help="seconds per tier per mutant")
    a = p.parse_args(argv)

    mutants = [m for m in MUTANTS if a.k in m.name]
    if a.list:
        for m in mutants:
            print(f"{m.name}: {m.why}\n    {m.path}: {m.old!r} -> {m.new!r}\n    tests: {' '.join(m.tests)}")
        return 0
    tiers = [("unit", a.unit_python, None)]
    if a.host_python and os.environ.get("COMFYUI_PATH"):
        tiers.append(("host", a.host_python, {k: os.environ[k] for k in ("COMFYUI_PATH", "IPADAPTER_PLUS_PATH")
                                              if os.environ.get(k)}))
    else:
        print("mutants: host tier not run (give --host-python and set COMFYUI_PATH / IPADAPTER_PLUS_PATH)")

    survivors = stale = 0
    for m in mutants:
        with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
            # A Python identifier: pytest imports the root __init__.py as a package, which a hyphenated folder breaks.
            copy = Path(tmp) / "stylestudio_pack"
            try:
                _copy_with(m, copy)
            except LookupError as e:
                print(f"STALE    {m.name}: {e}")
                stale += 1
                continue
            results = []
            for tier, python, env in tiers:
                killed, seconds, tail = _run(python, copy, m.tests, env, a.timeout)
                if killed and (" error" in tail and " failed" not in tail):
                    killed = False  # an import/collection error is a broken copy, not a caught mutant
                    tail = "ERROR (not counted as killed): " + tail
                results.append(killed)
                print(f"{'killed ' if killed else 'SURVIVED'} {m.name} [{tier}, {seconds:.0f} s]: {tail}")
            if not any(results):
                survivors += 1
    print(f"mutants: {len(mutants) - survivors - stale} killed, {survivors} survived, {stale} stale "
          f"of {len(mutants)}")
    return 1 if survivors or stale else 0


if __name__ == "__main__":
    sys.exit(main())
