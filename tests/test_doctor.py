"""``stylestudio doctor`` (issue 12): passes on a healthy set-up and fails with a clear line otherwise.

Unit tier: usage errors and the report format (no ComfyUI needed).
Host tier: the real command, each run in a fresh process exactly as a user runs it (``python -m stylestudio_cli
doctor``), against $COMFYUI_PATH with ComfyUI's folders in a temp ``--base-directory`` and the packs given with
``--extra-custom-nodes``: the CI set-up passes every check; without ComfyUI_IPAdapter_plus it fails naming it;
with a deliberately broken copy of the pack (AdaIN strength 0 still patches the model) it fails on "AdaIN off".
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI = os.environ.get("COMFYUI_PATH")
IPADAPTER = os.environ.get("IPADAPTER_PLUS_PATH")
HOST_SKIP = ("host tier skipped: set COMFYUI_PATH=/path/to/ComfyUI and IPADAPTER_PLUS_PATH=/path/to/"
             "ComfyUI_IPAdapter_plus to run `stylestudio doctor` against a real ComfyUI")


def _cli():
    """stylestudio_cli imported by path (the repo root must not go on sys.path: its `nodes` package would shadow
    ComfyUI's `nodes` module)."""
    if "stylestudio_cli" not in sys.modules:
        spec = importlib.util.spec_from_file_location("stylestudio_cli", REPO / "stylestudio_cli" / "__init__.py",
                                                      submodule_search_locations=[str(REPO / "stylestudio_cli")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["stylestudio_cli"] = module
        spec.loader.exec_module(module)
    import stylestudio_cli.__main__ as main
    import stylestudio_cli.doctor as doctor
    return main, doctor


def test_no_comfyui_is_a_usage_error(tmp_path, capsys):
    main, _doctor = _cli()
    assert main.main(["doctor", "--comfyui", str(tmp_path)]) == 2
    assert "is not a ComfyUI checkout" in capsys.readouterr().err


def test_report_table_and_failures():
    _main, doctor = _cli()
    report = doctor.Report()
    report.add("ComfyUI", doctor.PASS, "0.3.64")
    report.add("AdaIN off (sd15)", doctor.FAIL, "differs")
    text = report.format()
    assert re.search(r"^AdaIN off \(sd15\)\s+FAIL\s+differs$", text, re.M), text
    assert [r.check for r in report.failures] == ["AdaIN off (sd15)"]


# --- host tier ---------------------------------------------------------------------------------------------------
def _doctor(tmp_path, *packs, arch="all"):
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "stylestudio_cli", "doctor", "--comfyui", COMFYUI, "--no-custom-nodes", "--cpu",
           "--arch", arch, "--comfy-args", f"--base-directory {base}"]
    for p in packs:
        cmd += ["--extra-custom-nodes", str(p)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("COMFYUI_PATH", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), env=env, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def _row(out: str, check: str) -> str:
    rows = [ln for ln in out.splitlines() if ln.startswith(check + " ")]
    assert rows, f"no {check!r} row in:\n{out}"
    return rows[0]


@pytest.fixture(scope="module")
def host_paths():
    if not (COMFYUI and IPADAPTER):
        pytest.skip(HOST_SKIP)
    return COMFYUI, IPADAPTER


def test_doctor_passes_on_the_ci_host(host_paths, tmp_path):
    rc, out, err = _doctor(tmp_path, REPO, IPADAPTER)
    assert rc == 0, out + err
    assert "doctor: all" in out and "FAIL" not in out
    for arch in ("sd15", "sdxl"):
        for check in ("patch protocol", "AdaIN off", "AdaIN on", "Teacher off", "Teacher = plain run",
                      "Guidance off", "Guidance = SCFG", "Guidance formula"):
            assert re.search(r"\bPASS\b", _row(out, f"{check} ({arch})")), out
    assert "0.3.64" in _row(out, "ComfyUI") and "comfy_entrypoint" in _row(out, "StyleStudio pack")
    for check in ("torch", "device", "frontend", "IPAdapter_plus"):
        _row(out, check)


def test_doctor_fails_clearly_without_ipadapter_plus(host_paths, tmp_path):
    rc, out, err = _doctor(tmp_path, REPO)
    assert rc == 1, out + err
    row = _row(out, "IPAdapter_plus")
    assert "FAIL" in row and "install ComfyUI_IPAdapter_plus" in row, row
    assert re.search(r"^doctor: \d+ of \d+ checks FAILED: IPAdapter_plus$", out, re.M), out


def test_doctor_fails_when_effect_off_is_not_identical(host_paths, tmp_path):
    broken = tmp_path / "ComfyUI-StyleStudio-broken"
    shutil.copytree(REPO, broken, ignore=shutil.ignore_patterns("tests", "benchmarks", "workflows", ".git",
                                                                "__pycache__", "*.png", "*.jpg"))
    node = broken / "nodes" / "cross_modal_adain.py"
    text = node.read_text()
    off = "return io.NodeOutput(patched(model, FEATURE, None))"
    assert text.count(off) == 1
    # deliberately wrong: strength 0 still installs AdaIN at full strength
    node.write_text(text.replace(off, 'return io.NodeOutput(patched(model, FEATURE, {"strength": 1.0, '
                                      '**schedule_window(0.0, 1.0)}))'))
    rc, out, err = _doctor(tmp_path, broken, IPADAPTER, arch="sd15")
    assert rc == 1, out + err
    row = _row(out, "AdaIN off (sd15)")
    assert "FAIL" in row and "differs from the IP-Adapter-only run" in row, row
    assert "Teacher off (sd15)" in out and "FAIL" not in _row(out, "Teacher off (sd15)")
