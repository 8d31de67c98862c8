"""Run ``stylestudio validate`` on several files in one process (ComfyUI is loaded once).

    python _cli_validate.py COMFYUI_PATH BASE_DIRECTORY FILE...

Prints one JSON line per file: {"file", "rc", "out", "prompt"} (the API prompt the CLI wrote with --api-out).
The CLI package is imported from this checkout by path: the repository root holds a ``nodes`` package that
would shadow ComfyUI's ``nodes`` module if it were on sys.path.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _import_cli():
    init = REPO / "stylestudio_cli" / "__init__.py"
    spec = importlib.util.spec_from_file_location("stylestudio_cli", init,
                                                  submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["stylestudio_cli"] = mod
    spec.loader.exec_module(mod)
    from stylestudio_cli.__main__ import main
    return main


def run(comfyui: str, base: str, files: list[str]):
    main = _import_cli()
    tmp = tempfile.mkdtemp(prefix="stylestudio-cli-")
    for i, f in enumerate(files):
        api = os.path.join(tmp, f"api{i}.json")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                rc = main(["validate", f, "--comfyui", comfyui, "--cpu", "--comfy-args",
                           f"--base-directory {base}", "--input-dir", os.path.join(base, "input"),
                           "--api-out", api])
            except SystemExit as e:  # argparse
                rc = e.code
        prompt = None
        if os.path.isfile(api):
            with open(api, encoding="utf-8") as fh:
                prompt = json.load(fh)
        sys.__stdout__.write(json.dumps({"file": f, "rc": rc, "out": buf.getvalue(), "prompt": prompt}) + "\n")
        sys.__stdout__.flush()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], sys.argv[3:])
