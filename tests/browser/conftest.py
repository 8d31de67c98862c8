"""Browser tier: the real ComfyUI server with the real web editor (comfyui-frontend-package), driven by headless
Chromium through chromedriver's W3C WebDriver HTTP API (plain ``requests``, no extra Python package).

Run it as its own pytest invocation (it starts a server and a browser once per session):

    COMFYUI_PATH=/path/to/ComfyUI IPADAPTER_PLUS_PATH=/path/to/ComfyUI_IPAdapter_plus \
        python -m pytest -q tests/browser

``python`` must be the environment ComfyUI runs in (its requirements plus ``comfyui-frontend-package``); Chromium
and chromedriver come from the distribution (Debian: ``apt-get install chromium chromium-driver``). When any of
these is missing, every test here is skipped with one line saying what is missing. Screenshots and the editor's
saved files go to ``$STYLESTUDIO_ARTIFACTS`` (a temp folder when unset; its path is printed).

Nothing here imports ComfyUI or torch into the pytest process: the server is a subprocess.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from _browser_env import CHROMEDRIVER_CANDIDATES, CHROMIUM_CANDIDATES, SKIP_REASON  # noqa: F401
from _browser_env import first_file as _first_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SERVER_TIMEOUT_S = 180        # server start (imports torch and every node pack) on a busy 2-core machine
PAGE_TIMEOUT_S = 90           # the editor's page up to `app.graph` being ready
SCRIPT_TIMEOUT_S = 60         # any one script run in the page

# model files the shipped workflows name (empty files: the editor only needs the names in its combo lists)
MODEL_FILES = {
    "checkpoints": ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly-fp16.safetensors",
                    "RealVisXL_V4.0.safetensors"],
    "controlnet": ["xinsir-controlnet-canny-sdxl-1.0.safetensors"],
    "clip_vision": ["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"],
    "ipadapter": ["ip-adapter-plus_sdxl_vit-h.safetensors", "ip-adapter-plus_sd15.safetensors", "csgo_4_32.bin"],
}
INPUT_IMAGES = ["stylestudio_style.png", "stylestudio_style_a.png", "stylestudio_style_b.png",
                "stylestudio_style_c.png"]


def pytest_report_header(config):
    return [SKIP_REASON or f"StyleStudio browser tier: ComfyUI at {os.environ.get('COMFYUI_PATH')}, "
            f"Chromium {_first_file(CHROMIUM_CANDIDATES, 'STYLESTUDIO_CHROMIUM')}"]


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen, timeout: float = 15.0):
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def _tail(path: Path, n: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


# ----------------------------------------------------------------------------------------------------------
# artefacts
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = os.environ.get("STYLESTUDIO_ARTIFACTS")
    out = Path(path) if path else Path(tempfile.mkdtemp(prefix="stylestudio-browser-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser tier artefacts (screenshots, editor-saved files): {out}")
    return out


# ----------------------------------------------------------------------------------------------------------
# the ComfyUI server
# ----------------------------------------------------------------------------------------------------------
class ComfyServer:
    def __init__(self, root: Path):
        self.root = root
        self.base = root / "base"
        self.user = root / "user"
        self.log = root / "server.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.object_info: dict = {}

    def prepare(self):
        custom = self.base / "custom_nodes"
        custom.mkdir(parents=True)
        # the folder name is what the editor uses in /extensions/<name>/ URLs of the pack's web directory
        (custom / "ComfyUI-StyleStudio").symlink_to(REPO, target_is_directory=True)
        (custom / "ComfyUI_IPAdapter_plus").symlink_to(Path(os.environ["IPADAPTER_PLUS_PATH"]).resolve(),
                                                       target_is_directory=True)
        for folder, names in MODEL_FILES.items():
            d = self.base / "models" / folder
            d.mkdir(parents=True, exist_ok=True)
            for name in names:
                (d / name).write_bytes(b"")
        (self.base / "input").mkdir()
        (self.base / "output").mkdir()
        for name in INPUT_IMAGES:  # a small PNG each, so the LoadImage previews load without a 404
            (self.base / "input" / name).write_bytes(_png())
        settings = self.user / "default"
        settings.mkdir(parents=True)
        # no first-run template browser; the missing-node dialog stays on (it is what the tests look for)
        (settings / "comfy.settings.json").write_text(json.dumps({
            "Comfy.TutorialCompleted": True,
            "Comfy.Workflow.ShowMissingNodesWarning": True,
            "Comfy.Workflow.ShowMissingModelsWarning": True,
            "LiteGraph.Canvas.LowQualityRenderingZoomThreshold": 0.2,  # readable text in zoomed-out screenshots
            "Comfy.Minimap.Visible": False,
        }))

    def start(self):
        comfy = Path(os.environ["COMFYUI_PATH"]).resolve()
        cmd = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--cpu",
               "--base-directory", str(self.base), "--user-directory", str(self.user),
               "--input-directory", str(self.base / "input"), "--output-directory", str(self.base / "output"),
               "--temp-directory", str(self.root / "temp"), "--database-url", "sqlite:///:memory:",
               "--disable-auto-launch", "--preview-method", "none"]
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", DO_NOT_TRACK="1")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=str(comfy), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        import requests
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting; server log:\n"
                                   + _tail(self.log))
            try:
                r = requests.get(self.url + "/object_info", timeout=10)
                if r.status_code == 200:
                    self.object_info = r.json()
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"ComfyUI did not answer on {self.url} within {SERVER_TIMEOUT_S} s; server log:\n"
                               + _tail(self.log))
        problems = [n for n in ("StyleStudioCrossModalAdaIN", "IPAdapterAdvanced") if n not in self.object_info]
        if problems:
            raise RuntimeError(f"the server has no {problems} node: a pack failed to import; server log:\n"
                               + _tail(self.log, 120))

    def stop(self):
        if self.proc is not None:
            _kill_group(self.proc)


def _png(width: int = 64, height: int = 64, rgb=(180, 90, 40)) -> bytes:
    """A small solid-colour RGB PNG (stdlib only)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


_SERVER: ComfyServer | None = None


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    global _SERVER
    server = ComfyServer(tmp_path_factory.mktemp("comfyui"))
    server.prepare()
    _SERVER = server
    try:
        server.start()
        yield server
    finally:
        server.stop()
        _SERVER = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _SERVER is not None and str(HERE) in str(item.fspath):
        rep.sections.append(("ComfyUI server log (tail)", _tail(_SERVER.log, 40)))


# ----------------------------------------------------------------------------------------------------------
# the browser
# ----------------------------------------------------------------------------------------------------------
class WebDriverError(RuntimeError):
    pass


class Browser:
    """Headless Chromium through chromedriver's W3C WebDriver endpoints."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = root / "chromedriver.log"
        self.proc: subprocess.Popen | None = None
        self.session: str | None = None
        self.page_errors: list[dict] = []   # every browser log entry at level SEVERE, with the phase it came in
        self.phase = "start-up"

    # --- process and session
    def start(self):
        import requests
        self.requests = requests
        driver = _first_file(CHROMEDRIVER_CANDIDATES, "STYLESTUDIO_CHROMEDRIVER")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/status", timeout=5).json()["value"]["ready"]:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("chromedriver did not start within 30 s:\n" + _tail(self.log))
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1920,1080", "--lang=en-US",
                f"--user-data-dir={self.root / 'chromium-profile'}"]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": _first_file(CHROMIUM_CANDIDATES, "STYLESTUDIO_CHROMIUM"),
                                   "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"script": SCRIPT_TIMEOUT_S * 1000, "pageLoad": PAGE_TIMEOUT_S * 1000},
        }}}
        value = self._call("POST", "/session", caps, timeout=90)
        self.session = value["sessionId"]

    def stop(self):
        if self.session:
            with contextlib.suppress(Exception):
                self._call("DELETE", f"/session/{self.session}", timeout=20)
            self.session = None
        if self.proc is not None:
            _kill_group(self.proc)

    def _call(self, method, path, body=None, timeout=SCRIPT_TIMEOUT_S + 30):
        r = self.requests.request(method, self.base + path, json=body, timeout=timeout)
        try:
            data = r.json()
        except ValueError:
            raise WebDriverError(f"{method} {path}: HTTP {r.status_code} {r.text[:500]}") from None
        value = data.get("value")
        if r.status_code != 200:
            msg = value.get("message") if isinstance(value, dict) else value
            raise WebDriverError(f"{method} {path}: {msg}")
        return value

    def _s(self, path):
        return f"/session/{self.session}{path}"

    # --- page
    def open(self, url: str):
        self._call("POST", self._s("/url"), {"url": url}, timeout=PAGE_TIMEOUT_S + 30)
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.run("return !!(window.app && window.app.graph && window.app.canvas && "
                        "window.app.extensionManager && window.app.extensionManager.workflow && "
                        "window.app.extensionManager.workflow.activeWorkflow)"):
                return
            time.sleep(0.3)
        raise RuntimeError(f"the editor at {url} was not ready within {PAGE_TIMEOUT_S} s; browser log:\n"
                           + "\n".join(e["message"] for e in self.collect_log()[-30:]))

    def run(self, script: str, *args):
        """Run a synchronous script in the page (``return`` gives the value)."""
        return self._call("POST", self._s("/execute/sync"), {"script": script, "args": list(args)})

    def run_async(self, body: str, *args):
        """Run ``body`` as the body of an async function with ``args`` bound to ``args``; its return value (JSON)
        comes back; a thrown error is returned as ``{"__error__": ...}`` and raised here."""
        script = ("const done = arguments[arguments.length - 1];"
                  "const args = Array.prototype.slice.call(arguments, 0, arguments.length - 1);"
                  f"(async () => {{ {body} }})().then(v => done(v === undefined ? null : v),"
                  " e => done({__error__: String(e && e.stack || e)}));")
        value = self._call("POST", self._s("/execute/async"), {"script": script, "args": list(args)})
        if isinstance(value, dict) and "__error__" in value:
            raise WebDriverError("script failed in the page: " + value["__error__"])
        return value

    def click_at(self, x: float, y: float):
        """A real mouse click (W3C actions) at viewport coordinates."""
        actions = {"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                                "actions": [{"type": "pointerMove", "duration": 0, "x": int(x), "y": int(y),
                                             "origin": "viewport"},
                                            {"type": "pointerDown", "button": 0}, {"type": "pause", "duration": 80},
                                            {"type": "pointerUp", "button": 0}]}]}
        self._call("POST", self._s("/actions"), actions)
        self._call("DELETE", self._s("/actions"))

    def screenshot(self, path: Path):
        import base64
        png = self._call("GET", self._s("/screenshot"))
        path.write_bytes(base64.b64decode(png))
        return path

    def collect_log(self) -> list[dict]:
        """New browser-log entries since the last call (console messages, uncaught errors, failed requests)."""
        entries = self._call("POST", self._s("/se/log"), {"type": "browser"})
        for e in entries:
            e["phase"] = self.phase
            if e.get("level") == "SEVERE":
                self.page_errors.append(e)
        return entries


@pytest.fixture(scope="session")
def browser(comfy_server, tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium"))
    try:
        b.start()
        b.open(comfy_server.url + "/")
        b.collect_log()
        yield b
    finally:
        b.stop()
