"""Integrations of glmlab with other tools (ComfyUI); each lives in its own folder and imports lazily."""
