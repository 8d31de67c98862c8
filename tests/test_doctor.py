"""``stylestudio doctor`` (issues 12 and 13): passes on a healthy set-up and fails with a clear line otherwise.

Unit tier: usage errors, the report format, the --help rule and the IPAdapter_plus row's semantics (missing =
WARN, required or failed to import = FAIL) on a fake environment (no ComfyUI needed).
Host tier: the real command, each run in a fresh process exactly as a user runs it (``python -m stylestudio_cli
doctor``), against $COMFYUI_PATH with ComfyUI's folders in a temp ``--base-directory`` and the packs given with
``--extra-custom-nodes``: the CI set-up passes every check on both paths (native adapter nodes and
IPAdapter_plus); without ComfyUI_IPAdapter_plus it passes on the native path and says IPAdapter_plus is not
installed; with ``--require-ipadapter-plus`` it fails naming it; an IPAdapter_plus that fails to import fails;
deliberately broken copies of the pack (AdaIN strength 0 still patches the model; the native adapter's weight 0
still applies the style) fail on the "off" row.
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


def test_help_states_the_ipadapter_plus_rule(capsys):
    main, _doctor = _cli()
    with pytest.raises(SystemExit):
        main.main(["doctor", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--require-ipadapter-plus" in text and "it is optional" in text and "native adapter checks" in text, text


class _FakeNodes:
    NODE_CLASS_MAPPINGS: dict = {}


class _FakeEnv:
    nodes = _FakeNodes()

    def __init__(self, pack_failures=(), log_lines=()):
        self.pack_failures, self.log_lines = list(pack_failures), list(log_lines)


@pytest.mark.parametrize("required, failures, status, words", [
    (False, (), "WARN", "not installed: the native adapter nodes are used"),
    (True, (), "FAIL", "--require-ipadapter-plus was given: install ComfyUI_IPAdapter_plus"),
    (False, ("/x/custom_nodes/ComfyUI_IPAdapter_plus",), "FAIL", "failed to import"),
])
def test_ipadapter_plus_row_semantics(required, failures, status, words):
    _main, doctor = _cli()
    report = doctor.Report()
    assert doctor._check_ipadapter(report, _FakeEnv(failures), required=required) is False
    (row,) = report.rows
    assert (row.check, row.status) == ("IPAdapter_plus", status) and words in row.detail, row
    assert bool(report.failures) == (status == "FAIL")


# --- host tier ---------------------------------------------------------------------------------------------------
def _doctor(tmp_path, *packs, arch="all", extra=()):
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "stylestudio_cli", "doctor", "--comfyui", COMFYUI, "--no-custom-nodes", "--cpu",
           "--arch", arch, "--comfy-args", f"--base-directory {base}"]
    for p in packs:
        cmd += ["--extra-custom-nodes", str(p)]
    cmd += list(extra)
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


NATIVE_ROWS = ("adapter loader", "patch protocol", "Style adapter off", "Style adapter empty window",
               "Style adapter on")
METHOD_ROWS = ("AdaIN off", "AdaIN on", "Teacher off", "Teacher = plain run", "Guidance off", "Guidance = SCFG",
               "Guidance formula")


def _broken_copy(tmp_path, rel: str, old: str, new: str) -> Path:
    broken = tmp_path / "ComfyUI-StyleStudio-broken"
    shutil.copytree(REPO, broken, ignore=shutil.ignore_patterns("tests", "benchmarks", "workflows", ".git",
                                                                "__pycache__", "*.png", "*.jpg"))
    node = broken / rel
    text = node.read_text()
    assert text.count(old) == 1, (rel, old)
    node.write_text(text.replace(old, new))
    return broken


def test_doctor_passes_on_the_ci_host(host_paths, tmp_path):
    rc, out, err = _doctor(tmp_path, REPO, IPADAPTER)
    assert rc == 0, out + err
    assert "doctor: all" in out and "FAIL" not in out
    for arch in ("sd15", "sdxl"):
        for check in NATIVE_ROWS + METHOD_ROWS:
            assert re.search(r"\bPASS\b", _row(out, f"{check} ({arch}, native)")), out
        for check in ("patch protocol",) + METHOD_ROWS:
            assert re.search(r"\bPASS\b", _row(out, f"{check} ({arch}, IPAdapter_plus)")), out
    assert "CSGO SDXL" in _row(out, "adapter loader (sdxl, native)")
    assert "IP-Adapter SD1.5" in _row(out, "adapter loader (sd15, native)")
    assert "0.3.64" in _row(out, "ComfyUI") and "comfy_entrypoint" in _row(out, "StyleStudio pack")
    assert "5 nodes" in _row(out, "StyleStudio pack")
    assert "PASS" in _row(out, "IPAdapter_plus")
    for check in ("torch", "device", "frontend"):
        _row(out, check)


def test_doctor_passes_on_the_native_path_without_ipadapter_plus(host_paths, tmp_path):
    rc, out, err = _doctor(tmp_path, REPO)
    assert rc == 0, out + err
    row = _row(out, "IPAdapter_plus")
    assert "WARN" in row and "not installed: the native adapter nodes are used" in row, row
    assert re.search(r"^method checks \(IPAdapter_plus\)\s+info\s+not installed: the native adapter nodes are used",
                     out, re.M), out
    for arch in ("sd15", "sdxl"):
        for check in NATIVE_ROWS + METHOD_ROWS:
            assert re.search(r"\bPASS\b", _row(out, f"{check} ({arch}, native)")), out
    assert "(sd15, IPAdapter_plus)" not in out and "FAIL" not in out
    assert re.search(r"^doctor: all \d+ checks passed$", out, re.M), out


def test_doctor_fails_clearly_when_ipadapter_plus_is_required(host_paths, tmp_path):
    rc, out, err = _doctor(tmp_path, REPO, arch="sd15", extra=["--require-ipadapter-plus"])
    assert rc == 1, out + err
    row = _row(out, "IPAdapter_plus")
    assert "FAIL" in row and "install ComfyUI_IPAdapter_plus" in row, row
    assert re.search(r"^doctor: \d+ of \d+ checks FAILED: IPAdapter_plus$", out, re.M), out


def test_doctor_fails_when_installed_ipadapter_plus_does_not_import(host_paths, tmp_path):
    broken = tmp_path / "ComfyUI_IPAdapter_plus"
    shutil.copytree(IPADAPTER, broken, ignore=shutil.ignore_patterns(".git", "__pycache__", "examples"))
    init = broken / "__init__.py"
    init.write_text('raise ImportError("deliberately broken for the doctor test")\n' + init.read_text())
    rc, out, err = _doctor(tmp_path, REPO, broken, arch="sd15")
    assert rc == 1, out + err
    row = _row(out, "IPAdapter_plus")
    assert "FAIL" in row and "failed to import" in row and str(broken) in row, row
    assert re.search(r"^doctor: \d+ of \d+ checks FAILED: IPAdapter_plus$", out, re.M), out


def test_doctor_fails_when_effect_off_is_not_identical(host_paths, tmp_path):
    # deliberately wrong: strength 0 still installs AdaIN at full strength
    broken = _broken_copy(tmp_path, "nodes/cross_modal_adain.py",
                          "return io.NodeOutput(patched(model, FEATURE, None))",
                          'return io.NodeOutput(patched(model, FEATURE, {"strength": 1.0, '
                          '**schedule_window(0.0, 1.0)}))')
    rc, out, err = _doctor(tmp_path, broken, IPADAPTER, arch="sd15")
    assert rc == 1, out + err
    for source in ("native", "IPAdapter_plus"):
        row = _row(out, f"AdaIN off (sd15, {source})")
        assert "FAIL" in row and f"differs from the {source if source != 'native' else 'native adapter'}-only run" \
            in row, row
        assert "FAIL" not in _row(out, f"Teacher off (sd15, {source})")


def test_doctor_fails_when_native_adapter_weight_0_is_not_identical(host_paths, tmp_path):
    # deliberately wrong: weight 0 no longer returns the model unchanged, it applies the style at weight 1
    broken = _broken_copy(tmp_path, "nodes/apply_style_adapter.py", "if weight == 0 or end_at <= start_at:",
                          "weight = weight or 1.0\n    if end_at <= start_at:")
    rc, out, err = _doctor(tmp_path, broken, arch="sd15")
    assert rc == 1, out + err
    row = _row(out, "Style adapter off (sd15, native)")
    assert "FAIL" in row and "differs from the input model's run" in row and "weight 0" in row, row
    assert re.search(r"^doctor: \d+ of \d+ checks FAILED: Style adapter off \(sd15, native\)$", out, re.M), out
