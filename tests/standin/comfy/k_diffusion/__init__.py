"""Stand-in package (see comfy/__init__.py)."""
