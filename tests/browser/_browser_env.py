"""What the browser tier needs, and the one-line reason it skips when something is missing (stdlib only: this
module is imported when the tier is collected in any environment, e.g. the unit tier's venv without ComfyUI)."""
from __future__ import annotations

import importlib.util
import os
import sys

FRONTEND_VERSION = "1.27.10"  # what ComfyUI v0.3.64's requirements.txt pins
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")

def first_file(candidates, env_name):
    if os.environ.get(env_name):
        return os.environ[env_name] if os.path.isfile(os.environ[env_name]) else None
    return next((c for c in candidates if os.path.isfile(c)), None)


def _missing() -> str | None:
    """Why this tier cannot run here (one line), or None."""
    missing = []
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy or not os.path.isfile(os.path.join(comfy, "main.py")):
        missing.append("COMFYUI_PATH (a ComfyUI checkout with main.py)")
    if not os.environ.get("IPADAPTER_PLUS_PATH") or not os.path.isdir(os.environ["IPADAPTER_PLUS_PATH"]):
        missing.append("IPADAPTER_PLUS_PATH (ComfyUI_IPAdapter_plus)")
    if importlib.util.find_spec("comfyui_frontend_package") is None:
        missing.append(f"the pip package comfyui-frontend-package=={FRONTEND_VERSION} in {sys.executable}")
    if importlib.util.find_spec("requests") is None:
        missing.append(f"the pip package requests in {sys.executable}")
    if first_file(CHROMIUM_CANDIDATES, "STYLESTUDIO_CHROMIUM") is None:
        missing.append("Chromium (apt-get install chromium)")
    if first_file(CHROMEDRIVER_CANDIDATES, "STYLESTUDIO_CHROMEDRIVER") is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    if not missing:
        return None
    return "browser tier skipped: missing " + "; ".join(missing)


SKIP_REASON = _missing()


