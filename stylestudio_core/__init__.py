"""StyleStudio's method as pure torch: no ComfyUI import anywhere in this package (tests check it)."""
from .adain import cross_modal_adain
from .guidance import split_scale_correction, split_scale_guidance
from .layout import RowLayout

__all__ = ["cross_modal_adain", "split_scale_correction", "split_scale_guidance", "RowLayout"]
