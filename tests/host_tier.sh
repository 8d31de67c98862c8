#!/usr/bin/env bash
# Host and browser tiers in one command: the same behavioural suite against a real ComfyUI and a real
# ComfyUI_IPAdapter_plus, then the real web editor. Used by CI (.ci/run) and by developers:
#
#   bash tests/host_tier.sh                                    # the archives in ../shared/hosts
#   bash tests/host_tier.sh --comfyui ~/ComfyUI --ipadapter ~/ComfyUI/custom_nodes/ComfyUI_IPAdapter_plus
#
# --comfyui / --ipadapter take a checkout or a .tar.gz source archive (unpacked into a temporary folder).
# --venv DIR    the host venv (default .venv-host; made and filled on first use, reused after)
# --tiers LIST  comma-separated, default host,browser
# --strict      a tier that skipped (missing Chromium, frontend package, IPAdapter_plus, ...) is a failure (CI)
# Anything after `--` goes to pytest (e.g. `-- -k teacher -x`).
#
# The venv gets ComfyUI's requirements.txt minus the web-UI packages and torchaudio, plus the frontend package
# at the version that requirements.txt pins (browser tier only) and the `test` extra. torch/torchvision are
# pinned in every pip call (TORCH_PINS, default the matched pair that installs here) so nothing upgrades them.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
SHARED_HOSTS="$REPO/../shared/hosts"
COMFYUI_SRC="$(ls "$SHARED_HOSTS"/ComfyUI-v*.tar.gz 2>/dev/null | head -n1 || true)"
IPADAPTER_SRC="$(ls "$SHARED_HOSTS"/ComfyUI_IPAdapter_plus-*.tar.gz 2>/dev/null | head -n1 || true)"
VENV="$REPO/.venv-host"
TIERS="host,browser"
STRICT=0
TORCH_PINS="${TORCH_PINS:-torch==2.14.1 torchvision==0.29.1}"
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --comfyui) COMFYUI_SRC="$2"; shift 2 ;;
    --ipadapter) IPADAPTER_SRC="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --tiers) TIERS="$2"; shift 2 ;;
    --strict) STRICT=1; shift ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    *) echo "host_tier.sh: unknown argument $1 (see the header of tests/host_tier.sh)" >&2; exit 2 ;;
  esac
done
[ -n "$COMFYUI_SRC" ] || { echo "host_tier.sh: no ComfyUI: pass --comfyui DIR|ARCHIVE" >&2; exit 2; }

WORK="${STYLESTUDIO_HOST_WORK:-$(mktemp -d -t stylestudio-host.XXXXXX)}"
mkdir -p "$WORK"
ARTIFACTS="${STYLESTUDIO_ARTIFACTS:-$WORK/artifacts}"
mkdir -p "$ARTIFACTS"
export STYLESTUDIO_ARTIFACTS="$ARTIFACTS"

unpack() {  # unpack SRC_ARCHIVE TOP_FOLDER DEST_PARENT -> prints the unpacked folder
  tar -xzf "$1" -C "$3"
  echo "$3/$2"
}
if [ -d "$COMFYUI_SRC" ]; then
  COMFYUI_PATH="$(cd "$COMFYUI_SRC" && pwd)"
else
  COMFYUI_PATH="$(unpack "$COMFYUI_SRC" ComfyUI "$WORK")"
fi
if [ -n "$IPADAPTER_SRC" ]; then
  if [ -d "$IPADAPTER_SRC" ]; then
    IPADAPTER_PLUS_PATH="$(cd "$IPADAPTER_SRC" && pwd)"
  else
    mkdir -p "$WORK/ipadapter"
    IPADAPTER_PLUS_PATH="$(unpack "$IPADAPTER_SRC" ComfyUI_IPAdapter_plus "$WORK/ipadapter")"
  fi
  export IPADAPTER_PLUS_PATH
fi
export COMFYUI_PATH

# ---------------------------------------------------------------------------------------------- host venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
REQ="$WORK/host-requirements.txt"
# Web-UI packages are the browser tier's business (the frontend below); torchaudio is not used by the pack.
grep -v -E '^(comfyui-frontend-package|comfyui-workflow-templates|comfyui-embedded-docs|torchaudio|torch|torchvision)([^A-Za-z0-9_-]|$)' \
  "$COMFYUI_PATH/requirements.txt" > "$REQ"
FRONTEND="$(grep -E '^comfyui-frontend-package==' "$COMFYUI_PATH/requirements.txt" || true)"
STAMP="$VENV/.stylestudio-host-stamp"
WANT="$(cat "$REQ"; echo "$TORCH_PINS $FRONTEND"; cat pyproject.toml)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  T0=$SECONDS
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check $TORCH_PINS -r "$REQ" requests ".[test]"
  if [ -n "$FRONTEND" ]; then
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q --disable-pip-version-check $TORCH_PINS "$FRONTEND"
  fi
  echo "$WANT" > "$STAMP"
  echo "host venv ready in $((SECONDS - T0)) s: $VENV"
fi

echo "host: COMFYUI_PATH=$COMFYUI_PATH"
echo "host: IPADAPTER_PLUS_PATH=${IPADAPTER_PLUS_PATH:-<not set: IP-Adapter stand-in>}"
echo "host: artefacts (screenshots, reports) in $ARTIFACTS"

STATUS=0
run_tier() {  # run_tier NAME PYTEST-TARGETS...
  local name="$1"; shift
  local t0=$SECONDS rc=0
  echo "=== $name tier ==="
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$ARTIFACTS/$name.xml" "$@" \
    ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"} || rc=$?
  local check=(--tier "$name" --junit "$ARTIFACTS/$name.xml" --seconds "$((SECONDS - t0))")
  [ "$STRICT" = 1 ] && check+=(--strict)
  "$VENV/bin/python" tests/tier_check.py "${check[@]}" --pytest-rc "$rc" || STATUS=1
}
case ",$TIERS," in *,host,*) run_tier host tests --ignore=tests/browser ;; esac
case ",$TIERS," in *,browser,*) run_tier browser tests/browser ;; esac
exit $STATUS
