"""Stand-in of ``comfy_api/latest/_io.py`` (ComfyUI v0.3.64): the V3 node schema.

Behaviour reproduced (checked against the real module by tests/test_v3_schema.py on the host tier):

* Inputs/outputs are objects (``io.Float.Input("strength", default=..., tooltip=...)``); a V1 view of them is
  derived: ``INPUT_TYPES()`` gives ``{"required": {id: (TYPE, options)}, "optional": {...}}`` in schema order,
  options holding only the values that were set (``None`` is pruned), with the real key names (``widgetType``,
  ``forceInput``, ``display``, upload flags as ``{"image_upload": True}``...).
* ``GET_SCHEMA()`` validates (unique ids) and finalises (outputs without an id get ``_<i>_<TYPE>_``), then fills
  the V1 class attributes (``RETURN_TYPES``, ``RETURN_NAMES`` = display name or type, ``OUTPUT_TOOLTIPS``,
  ``OUTPUT_IS_LIST``, ``DESCRIPTION``, ``CATEGORY``, ``OUTPUT_NODE`` ...), which are read-only class properties
  computed on first access, as in the real module.
* ``FUNCTION`` is ``"EXECUTE_NORMALIZED"``, which calls the classmethod ``execute(**inputs)`` and normalises
  its result to a ``NodeOutput`` (tuple / dict / None accepted). Instantiating a node class checks that it
  overrides ``define_schema`` and ``execute``.
* ``GET_NODE_INFO_V1()`` is what the server's ``/object_info`` returns for the node.

Only the types the pack's nodes use (and a few neighbours) exist; anything else raises AttributeError here,
which is the point: a node using a new surface must extend the stand-in (and the host-tier comparison).
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


def _pruned(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class _IOType(str):
    """The real module's io-type strings compare unequal to nothing for ``!=`` (ComfyUI's wildcard trick) but are
    plain strings otherwise; only their string value matters here."""


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


# --- inputs and outputs -----------------------------------------------------------------------------------------
class Input:
    """A socket input (no widget)."""
    io_type: str = None

    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict=None):
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy
        self.extra_dict = extra_dict or {}

    def as_dict(self) -> dict:
        return _pruned({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                        "lazy": self.lazy}) | _pruned(self.extra_dict)

    def get_io_type(self) -> str:
        return _IOType(self.io_type)


class WidgetInput(Input):
    """An input that the editor shows as a widget (value stored in the workflow's widgets_values)."""

    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: Any = None, socketless: bool = None, widget_type: str = None, force_input: bool = None,
                 extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default, self.socketless, self.widget_type, self.force_input = default, socketless, widget_type, \
            force_input

    def as_dict(self) -> dict:
        return super().as_dict() | _pruned({"default": self.default, "socketless": self.socketless,
                                            "widgetType": self.widget_type, "forceInput": self.force_input})

    def get_io_type(self) -> str:
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output:
    io_type: str = None

    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list

    def as_dict(self) -> dict:
        return _pruned({"display_name": self.display_name, "tooltip": self.tooltip,
                        "is_output_list": self.is_output_list})

    def get_io_type(self) -> str:
        return self.io_type


def _comfy_type(io_type: str, input_base=Input, output_base=Output, name: str = None):
    """A type namespace ``T`` with ``T.io_type``, ``T.Input`` and ``T.Output`` bound to ``io_type``."""
    ns = type(name or io_type.title(), (), {"io_type": _IOType(io_type)})
    ns.Input = type("Input", (input_base,), {"io_type": ns.io_type})
    ns.Output = type("Output", (output_base,), {"io_type": ns.io_type})
    return ns


def Custom(io_type: str):
    """A ComfyType for a pack's own socket type (e.g. ``io.Custom("STYLE_ADAPTER")``)."""
    return _comfy_type(io_type, name="CustomComfyType")


class _BooleanInput(WidgetInput):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: bool = None, label_on: str = None, label_off: str = None, socketless: bool = None,
                 force_input: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
        self.label_on, self.label_off = label_on, label_off

    def as_dict(self) -> dict:
        return super().as_dict() | _pruned({"label_on": self.label_on, "label_off": self.label_off})


class _IntInput(WidgetInput):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: int = None, min: int = None, max: int = None, step: int = None,
                 control_after_generate: bool = None, display_mode: NumberDisplay = None, socketless: bool = None,
                 force_input: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
        self.min, self.max, self.step = min, max, step
        self.control_after_generate, self.display_mode = control_after_generate, display_mode

    def as_dict(self) -> dict:
        return super().as_dict() | _pruned({
            "min": self.min, "max": self.max, "step": self.step,
            "control_after_generate": self.control_after_generate,
            "display": self.display_mode.value if self.display_mode else None})


class _FloatInput(WidgetInput):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: float = None, min: float = None, max: float = None, step: float = None,
                 round: float = None, display_mode: NumberDisplay = None, socketless: bool = None,
                 force_input: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
        self.min, self.max, self.step, self.round, self.display_mode = min, max, step, round, display_mode

    def as_dict(self) -> dict:
        # (the real Float passes the enum itself as "display", unlike Int)
        return super().as_dict() | _pruned({"min": self.min, "max": self.max, "step": self.step,
                                            "round": self.round, "display": self.display_mode})


class _StringInput(WidgetInput):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 multiline=False, placeholder: str = None, default: str = None, dynamic_prompts: bool = None,
                 socketless: bool = None, force_input: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
        self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

    def as_dict(self) -> dict:
        return super().as_dict() | _pruned({"multiline": self.multiline, "placeholder": self.placeholder,
                                            "dynamicPrompts": self.dynamic_prompts})


class _ComboInput(WidgetInput):
    def __init__(self, id: str, options=None, display_name: str = None, optional=False, tooltip: str = None,
                 lazy: bool = None, default=None, control_after_generate: bool = None, upload: UploadType = None,
                 image_folder: FolderType = None, remote=None, socketless: bool = None):
        if isinstance(options, type) and issubclass(options, Enum):
            options = [v.value for v in options]
        if isinstance(default, Enum):
            default = default.value
        super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
        self.multiselect = False
        self.options, self.control_after_generate, self.upload = options, control_after_generate, upload
        self.image_folder, self.remote = image_folder, remote

    def as_dict(self) -> dict:
        return super().as_dict() | _pruned({
            "multiselect": self.multiselect, "options": self.options,
            "control_after_generate": self.control_after_generate,
            **({self.upload.value: True} if self.upload is not None else {}),
            "image_folder": self.image_folder.value if self.image_folder else None,
            "remote": self.remote.as_dict() if self.remote else None})


Boolean = _comfy_type("BOOLEAN", _BooleanInput, name="Boolean")
Int = _comfy_type("INT", _IntInput, name="Int")
Float = _comfy_type("FLOAT", _FloatInput, name="Float")
String = _comfy_type("STRING", _StringInput, name="String")
Combo = _comfy_type("COMBO", _ComboInput, name="Combo")
Image = _comfy_type("IMAGE", name="Image")
Mask = _comfy_type("MASK", name="Mask")
Latent = _comfy_type("LATENT", name="Latent")
Conditioning = _comfy_type("CONDITIONING", name="Conditioning")
Model = _comfy_type("MODEL", name="Model")
Clip = _comfy_type("CLIP", name="Clip")
Vae = _comfy_type("VAE", name="Vae")
ClipVision = _comfy_type("CLIP_VISION", name="ClipVision")
ClipVisionOutput = _comfy_type("CLIP_VISION_OUTPUT", name="ClipVisionOutput")


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


# --- schema -----------------------------------------------------------------------------------------------------
@dataclass
class NodeInfoV1:
    input: dict = None
    input_order: dict = None
    output: list = None
    output_is_list: list = None
    output_name: list = None
    output_tooltips: list = None
    name: str = None
    display_name: str = None
    description: str = None
    python_module: Any = None
    category: str = None
    output_node: bool = None
    deprecated: bool = None
    experimental: bool = None
    api_node: bool = None


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = None
    outputs: list = None
    hidden: list = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self):
        ins = [i.id for i in self.inputs or []]
        outs = [o.id for o in self.outputs or []]
        problems = []
        if len(set(ins)) != len(ins):
            problems.append(f"Input ids must be unique, but {sorted({i for i in ins if ins.count(i) > 1})} are not.")
        if len(set(outs)) != len(outs):
            problems.append(f"Output ids must be unique, but {sorted({o for o in outs if outs.count(o) > 1})} are not.")
        if set(ins) & set(outs):
            problems.append(f"Ids must be unique between inputs and outputs, but {set(ins) & set(outs)} are not.")
        if problems:
            raise ValueError("\n".join(problems))

    def finalize(self):
        if self.is_api_node:
            self.hidden = list(self.hidden or [])
            for h in (Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org):
                if h not in self.hidden:
                    self.hidden.append(h)
        if self.is_output_node:
            self.hidden = list(self.hidden or [])
            for h in (Hidden.prompt, Hidden.extra_pnginfo):
                if h not in self.hidden:
                    self.hidden.append(h)
        for i, output in enumerate(self.outputs or []):
            if output.id is None:
                output.id = f"_{i}_{output.io_type}_"

    def v1_inputs(self) -> dict:
        inputs = {"required": {}}
        for i in self.inputs or []:
            options = i.as_dict()
            options.pop("optional", None)
            inputs.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), options)
        for h in self.hidden or []:
            inputs.setdefault("hidden", {})[h.name] = (h.value,)
        return inputs

    def get_v1_info(self, cls) -> NodeInfoV1:
        inputs = self.v1_inputs()
        outs = self.outputs or []
        return NodeInfoV1(
            input=inputs, input_order={k: list(v) for k, v in inputs.items()},
            output=[o.io_type for o in outs], output_is_list=[o.is_output_list for o in outs],
            output_name=[o.display_name or o.io_type for o in outs],
            output_tooltips=[o.tooltip or None for o in outs],
            name=self.node_id, display_name=self.display_name, category=self.category,
            description=self.description, output_node=self.is_output_node, deprecated=self.is_deprecated,
            experimental=self.is_experimental, api_node=self.is_api_node,
            python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"))


# --- nodes ------------------------------------------------------------------------------------------------------
class NodeOutput:
    """A node's result: positional outputs in schema order (plus optional ui / expand / block_execution)."""

    def __init__(self, *args: Any, ui=None, expand: dict = None, block_execution: str = None):
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self):
        return self.args if self.args else None

    @classmethod
    def from_dict(cls, data: dict) -> "NodeOutput":
        return cls(*tuple(data.get("result", ())), ui=data.get("ui"), expand=data.get("expand"))

    def __getitem__(self, index):
        return self.args[index]


class _classproperty:
    def __init__(self, f):
        self.f = f

    def __get__(self, obj, owner):
        return self.f(owner)


def _v1_attribute(name: str):
    def get(cls):
        cls._schema_attributes()
        return cls._V1[name]
    return _classproperty(get)


class ComfyNode:
    """Base class of V3 nodes: override the classmethods ``define_schema()`` and ``execute(**inputs)``."""

    RELATIVE_PYTHON_MODULE = None
    SCHEMA = None
    hidden = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    def __init__(self):
        type(self).VALIDATE_CLASS()

    @classmethod
    def VALIDATE_CLASS(cls):
        for name in ("define_schema", "execute"):
            if getattr(cls, name).__func__ is getattr(ComfyNode, name).__func__:
                raise Exception(f"No {name} function was defined for node class {cls.__name__}.")

    @_classproperty
    def FUNCTION(cls):  # noqa: N802
        return "EXECUTE_NORMALIZED_ASYNC" if inspect.iscoroutinefunction(cls.execute) else "EXECUTE_NORMALIZED"

    @classmethod
    def EXECUTE_NORMALIZED(cls, *args, **kwargs) -> NodeOutput:  # noqa: N802
        out = cls.execute(*args, **kwargs)
        if out is None:
            out = NodeOutput()
        elif isinstance(out, tuple):
            out = NodeOutput(*out)
        elif isinstance(out, dict):
            out = NodeOutput.from_dict(out)
        elif not isinstance(out, NodeOutput):
            raise Exception(f"Invalid return type from node: {type(out)}")
        if out.expand is not None and not cls.GET_SCHEMA().enable_expand:
            raise Exception(f"Node {cls.__name__} is not expandable, but expand included in NodeOutput.")
        return out

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Schema:  # noqa: N802
        schema = cls.define_schema()
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802
        cls.VALIDATE_CLASS()
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        cls.SCHEMA = schema
        return schema

    @classmethod
    def _schema_attributes(cls):
        if "_V1" not in cls.__dict__:
            s = cls.GET_SCHEMA()
            outs = s.outputs or []
            cls._V1 = {
                "DESCRIPTION": s.description, "CATEGORY": s.category, "EXPERIMENTAL": s.is_experimental,
                "DEPRECATED": s.is_deprecated, "API_NODE": s.is_api_node, "OUTPUT_NODE": s.is_output_node,
                "INPUT_IS_LIST": s.is_input_list, "NOT_IDEMPOTENT": s.not_idempotent,
                "RETURN_TYPES": [o.io_type for o in outs], "RETURN_NAMES": [o.display_name or o.io_type for o in outs],
                "OUTPUT_IS_LIST": [o.is_output_list for o in outs],
                "OUTPUT_TOOLTIPS": [o.tooltip or None for o in outs]}

    DESCRIPTION = _v1_attribute("DESCRIPTION")
    CATEGORY = _v1_attribute("CATEGORY")
    EXPERIMENTAL = _v1_attribute("EXPERIMENTAL")
    DEPRECATED = _v1_attribute("DEPRECATED")
    API_NODE = _v1_attribute("API_NODE")
    OUTPUT_NODE = _v1_attribute("OUTPUT_NODE")
    INPUT_IS_LIST = _v1_attribute("INPUT_IS_LIST")
    OUTPUT_IS_LIST = _v1_attribute("OUTPUT_IS_LIST")
    RETURN_TYPES = _v1_attribute("RETURN_TYPES")
    RETURN_NAMES = _v1_attribute("RETURN_NAMES")
    OUTPUT_TOOLTIPS = _v1_attribute("OUTPUT_TOOLTIPS")
    NOT_IDEMPOTENT = _v1_attribute("NOT_IDEMPOTENT")

    @classmethod
    def INPUT_TYPES(cls, include_hidden=True, return_schema=False):  # noqa: N802
        schema = cls.FINALIZE_SCHEMA()
        inputs = schema.v1_inputs()
        if not include_hidden:
            inputs.pop("hidden", None)
        return (inputs, schema) if return_schema else inputs

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict:  # noqa: N802
        return asdict(cls.GET_SCHEMA().get_v1_info(cls))
