"""glmlab's ComfyUI custom nodes: link this folder into ComfyUI's `custom_nodes/` (see README.md).

ComfyUI imports this package by its folder and reads the two mappings below; nothing here imports
ComfyUI, so the package also imports (and is tested) without it.
"""

from .nodes import GLMVisualQA

NODE_CLASS_MAPPINGS = {"GLMVisualQA": GLMVisualQA}
NODE_DISPLAY_NAME_MAPPINGS = {"GLMVisualQA": "GLM Visual QA"}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "GLMVisualQA"]
