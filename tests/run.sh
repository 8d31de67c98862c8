#!/usr/bin/env bash
# The test command (README, Development). Makes its own venv with the CPU torch build, the test extra, and
# runs the suite. Host tier: export COMFYUI_PATH (and IPADAPTER_PLUS_PATH) and VENV pointing at a venv that
# has ComfyUI's requirements (see README) before running it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/pip" install -q torch==2.13.0
fi
TORCH_PIN="torch==$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
"$VENV/bin/pip" install -q "$TORCH_PIN" ".[test]"
exec "$VENV/bin/python" -m pytest -q "$@"
