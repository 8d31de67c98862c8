"""``python -m stylestudio_cli`` / ``stylestudio``: validate and run ComfyUI workflow files headless.

  stylestudio validate WORKFLOW.json --comfyui PATH [--extra-custom-nodes DIR ...] [--set NODE.INPUT=VALUE ...]
  stylestudio run      WORKFLOW.json --comfyui PATH [--set NODE.INPUT=VALUE ...] [--out DIR]
  stylestudio doctor   --comfyui PATH   (versions, loading, and the method's facts on a tiny model; see doctor.py)

Exit status: 0 = the graph would execute (validate) / ran and wrote its outputs (run); 1 = problems found or the
run failed; 2 = bad usage (no ComfyUI, unreadable file, bad --set).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .convert import load_workflow


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("workflow", help="workflow JSON (UI format as the editor saves it, or API format)")
    common.add_argument("--comfyui", metavar="PATH", default=None,
                        help="ComfyUI checkout to load in-process (default: $COMFYUI_PATH)")
    common.add_argument("--extra-custom-nodes", metavar="DIR", action="append", default=[],
                        help="also load this custom node pack folder (repeatable), e.g. a ComfyUI-StyleStudio or "
                             "ComfyUI_IPAdapter_plus checkout outside ComfyUI/custom_nodes")
    common.add_argument("--no-custom-nodes", action="store_true",
                        help="do not load the packs in ComfyUI's custom_nodes folder (only --extra-custom-nodes)")
    common.add_argument("--api-nodes", action="store_true", help="also load ComfyUI's API (cloud) nodes")
    common.add_argument("--extra-model-paths-config", metavar="YAML", action="append", default=[],
                        help="extra model folders, in ComfyUI's extra_model_paths.yaml format (repeatable)")
    common.add_argument("--input-dir", metavar="DIR", default=None,
                        help="ComfyUI input folder (where LoadImage looks), default: ComfyUI's own")
    common.add_argument("--set", metavar="NODE.INPUT=VALUE", action="append", default=[], dest="sets",
                        help="override an input before validation: NODE is a node title or id, VALUE is JSON when "
                             "it parses (42, 0.5, true, \"text\") and a plain string otherwise; NODE.class_type=NAME "
                             "swaps the node's class (repeatable)")
    dev = common.add_mutually_exclusive_group()
    dev.add_argument("--cpu", dest="cpu", action="store_true", default=None,
                     help="run on the CPU (default: only when no GPU is found)")
    dev.add_argument("--gpu", dest="cpu", action="store_false", help="never force --cpu")
    common.add_argument("--comfy-args", metavar="ARGS", default=None,
                        help="more ComfyUI command-line flags, as one string, e.g. \"--lowvram --fp16-vae\"")
    common.add_argument("-v", "--verbose", action="store_true", help="show ComfyUI's log")

    p = argparse.ArgumentParser(prog="stylestudio", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", parents=[common], help="check that a workflow would execute, report every problem")
    v.add_argument("--api-out", metavar="FILE", default=None, help="also write the API-format prompt to FILE")
    r = sub.add_parser("run", parents=[common], help="validate, then execute in-process and write the outputs")
    r.add_argument("--out", metavar="DIR", default=None, help="output folder (default: ComfyUI's output folder)")
    r.add_argument("--api-out", metavar="FILE", default=None, help="also write the API-format prompt to FILE")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    from .doctor import add_arguments as doctor_arguments
    doctor_arguments(sub.add_parser("doctor", help="check the ComfyUI + StyleStudio set-up; exit 1 on any failure"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")

    if args.command == "doctor":
        from .doctor import run as doctor
        return doctor(args)
    from . import runner
    from .comfy_env import ComfyUINotFound, load_comfyui

    try:
        workflow = load_workflow(args.workflow)
    except (OSError, ValueError) as e:
        print(f"error: cannot read {args.workflow}: {e}", file=sys.stderr)
        return 2
    try:
        env = load_comfyui(args.comfyui, extra_custom_nodes=args.extra_custom_nodes, cpu=args.cpu,
                           comfy_args=args.comfy_args, extra_model_paths=args.extra_model_paths_config,
                           custom_nodes=not args.no_custom_nodes, api_nodes=args.api_nodes, verbose=args.verbose)
    except ComfyUINotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    old_input = None
    if args.input_dir:
        old_input = env.folder_paths.get_input_directory()
        env.folder_paths.set_input_directory(os.path.abspath(args.input_dir))
    try:
        try:
            report = runner.validate(env, workflow, args.sets, verbose=args.verbose)
        except runner.SetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        name = os.path.basename(args.workflow)
        print(f"{name}: ComfyUI {env.version} at {env.root}" + (" (already loaded)" if env.reused else ""))
        for note in report.notes:
            print(f"  {note}")
        if args.api_out:
            with open(args.api_out, "w", encoding="utf-8") as f:
                json.dump(report.prompt, f, indent=2)
            print(f"  API-format prompt written to {args.api_out}")
        if report.problems:
            print(report.format())
        n_err = len(report.errors)
        if not report.ok:
            print(f"{name}: NOT valid ({n_err} error{'s' if n_err != 1 else ''})")
            return 1
        warn = len(report.problems)
        print(f"{name}: valid ({len(report.prompt)} nodes, {len(report.good_outputs)} output node"
              f"{'s' if len(report.good_outputs) != 1 else ''}" + (f", {warn} warning(s)" if warn else "") + ")")
        if args.command == "validate":
            return 0

        out_dir = os.path.abspath(args.out) if args.out else env.folder_paths.get_output_directory()
        progress = None if args.no_progress else runner.TerminalProgress()
        result = runner.execute(env, report, out_dir, workflow=workflow, progress=progress)
        if not result.success:
            print(f"{name}: run FAILED after {result.seconds:.1f} s: {result.error or 'unknown error'}",
                  file=sys.stderr)
            return 1
        print(f"{name}: done in {result.seconds:.1f} s")
        for path in result.files:
            print(f"  wrote {path}")
        for path in result.previews:
            print(f"  preview {path}")
        if not result.files and not result.previews:
            print(f"  (no files written; output folder {out_dir})")
        return 0
    finally:
        if old_input is not None:
            env.folder_paths.set_input_directory(old_input)


if __name__ == "__main__":
    sys.exit(main())
