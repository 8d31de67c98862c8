"""Test tiers.

* Unit tier (always): the core's maths with plain torch, and the nodes on the stand-in host (tests/standin),
  a small re-implementation of exactly the ComfyUI surfaces the pack uses.
* Host tier: set COMFYUI_PATH to a ComfyUI checkout (and IPADAPTER_PLUS_PATH to ComfyUI_IPAdapter_plus) and the
  same behavioural tests run against the real ComfyUI instead, plus the host-only tests.

Only one host can live in a process (both provide the top-level `comfy` package), so the tier is chosen per
pytest run: the real host when COMFYUI_PATH is set, the stand-in otherwise.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

HOST_TIER_SKIP = ("host tier skipped: set COMFYUI_PATH=/path/to/ComfyUI (and IPADAPTER_PLUS_PATH="
                  "/path/to/ComfyUI_IPAdapter_plus) to run it")


def _make_host():
    if os.environ.get("COMFYUI_PATH"):
        from hosts.comfyui_host import ComfyUIHost
        return ComfyUIHost()
    from hosts.standin_host import StandinHost
    return StandinHost()


_HOST = None


def get_host():
    global _HOST
    if _HOST is None:
        _HOST = _make_host()
    return _HOST


@pytest.fixture(scope="session")
def host():
    return get_host()


@pytest.fixture(params=["sd15", "sdxl"])
def arch(request):
    return request.param


@pytest.fixture(params=["ipadapter", "native"])
def style_source(request):
    """Runs a test once with IPAdapter_plus's style (stand-in on the unit tier) and once with the pack's native
    style adapter; tests/helpers.py `ip()` reads it. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    import helpers
    helpers.STYLE_SOURCE["name"] = request.param
    yield request.param
    helpers.STYLE_SOURCE["name"] = "ipadapter"


def pytest_report_header(config):
    tier = "host tier: real ComfyUI at " + os.environ["COMFYUI_PATH"] if os.environ.get("COMFYUI_PATH") \
        else "unit tier: stand-in host (" + HOST_TIER_SKIP + ")"
    return [f"StyleStudio {tier}"]
