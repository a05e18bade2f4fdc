"""Vera: layered diffusion video editing. The headless engine.

Generates an edit layer and an alpha matte and composites them over the untouched plate.
See docs/architecture.md for the module map.
"""

__version__ = "0.1.0"
