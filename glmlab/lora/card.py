"""What a finished run writes beside the PEFT adapter: `glmlab.json` and a README.md model card.

`glmlab.json` is the run's record for machines (the recipe, the base model and revision, the data
fingerprint, the metrics and the library versions); the model card is the same facts for people,
with the two ways to load the adapter. `read_run_info` reads `glmlab.json` back.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

from glmlab.files import atomic_write
from glmlab.lora.recipe import LoraRecipe

RUN_FILE = "glmlab.json"
LIBRARIES = ("glmlab", "torch", "transformers", "peft", "accelerate", "datasets")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_run_files(output_dir: Path, info: dict[str, Any]) -> None:
    """Write glmlab.json and README.md (the model card) into the adapter folder, each replaced whole."""
    info = {**info, "versions": library_versions()}
    atomic_write(output_dir / RUN_FILE, json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n")
    atomic_write(output_dir / "README.md", model_card(info))


def read_run_info(output_dir: str | Path) -> dict[str, Any]:
    """The glmlab.json of an adapter folder written by `glmlab.lora.train`."""
    return json.loads((Path(output_dir) / RUN_FILE).read_text(encoding="utf-8"))


def model_card(info: dict[str, Any]) -> str:
    recipe = LoraRecipe.from_dict(info["recipe"])
    adapter, prompt = recipe.adapter, recipe.prompt
    metrics = "\n".join(f"| {key} | {_number(value)} |" for key, value in sorted(info["metrics"].items()))
    data = info["data"]
    tags = ["glmlab", "lora", "peft", "glm4v", f"recipe-{recipe.name}"]
    return f"""---
base_model: {info["base_model"]}
library_name: peft
tags: [{", ".join(tags)}]
---

# {recipe.name} LoRA adapter for {info["base_model"]}

{recipe.description or "A LoRA adapter trained with glmlab."}

- Base model: `{info["base_model"]}` (revision `{info.get("base_revision") or "local"}`)
- Adapter: rank {adapter.rank}, alpha {adapter.alpha}, dropout {adapter.dropout};
  {info["adapted_modules"]} modules
  adapted (`{adapter.target_regex}`); {info["trainable_parameters"]:,} trainable parameters
  {"; modules trained in full: " + ", ".join(adapter.modules_to_save) if adapter.modules_to_save else ""}
- Prompt: thinking {"on" if prompt.thinking else "off (/nothink)"};
  images up to {prompt.max_image_pixels:,} px;
  system prompt: {prompt.system!r}; fixed instruction: {prompt.instruction!r}
- Data: {data["source"]}: {data["train_records"]} training, {data["eval_records"]} held-out records
  (fingerprint `{data["fingerprint"][:16]}`)
- Training: {info["global_step"]} steps in {info["train_runtime_s"]:.0f} s, seed {recipe.seed}

## Use

```python
import glmlab
vlm = glmlab.load("{info["base_model"]}", adapter="path/to/this/folder")
print(vlm.ask("image.png", "your question", thinking={prompt.thinking}).text)
```

With plain peft: `PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), folder)`.
Ask with the same prompt settings as training (thinking {"on" if prompt.thinking else "off"}, the same system
prompt), since the adapter learned answers under exactly that template.

## Metrics

| metric | value |
|---|---|
{metrics}

The full recipe, data fingerprint and library versions are in `glmlab.json`.
"""


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
