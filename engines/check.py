"""Conformance checks of glmlab's hand-offs, run with the engines' own code (`make engines`).

Run by glmlab's environment: it writes what glmlab hands to an engine (vLLM command lines, adapters
exported for vLLM, a merged checkpoint, glmlab's own greedy tokens) into a work folder, then runs one
small script per check (engines/checks/*.py) inside that engine's side environment (.engines/, made by
engines/setup.sh), passing a JSON file of paths and expected values. Each script prints its verdict as
the last line of its output, a JSON object {"ok": bool, "reason": str}. The last line printed here is

    ENGINES vllm_args=ok vllm_lora=ok merged_transformers=ok gguf=ok

with FAIL:<reason> for a check that failed; the exit status is 1 when any did.

    python engines/check.py [--only vllm_args,gguf] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ROOT / ".engines"
CHECKS = ("vllm_args", "vllm_lora", "merged_transformers", "gguf")
ENV_OF = {"vllm_args": "vllm", "vllm_lora": "vllm", "merged_transformers": "vllm", "gguf": "llama"}
# the script of each check in engines/checks/ (llama_gguf.py: a gguf.py would hide the gguf package)
SCRIPT_OF = {
    "vllm_args": "vllm_args",
    "vllm_lora": "vllm_lora",
    "merged_transformers": "merged_transformers",
    "gguf": "llama_gguf",
}
TIMEOUT_S = 900
MAX_NEW_TOKENS = 8
MANIFEST = "glmlab_export.json"  # glmlab.export.MANIFEST
TEXT_PROMPTS = ["What is the capital of France?", "Count from one to five.", "你好，请介绍一下你自己。"]
IMAGE_PROMPT = "What colour is the square?"
GGUF_QUANTS = ("f16", "q8_0", "q4_k_m")
LLAMA_CPP = ENGINES / "llama-src" / "vendor" / "llama.cpp"  # the checkout llama-cpp-python is built from


@dataclass
class Result:
    ok: bool
    reason: str = ""

    def field(self) -> str:
        if self.ok:
            return "ok"
        slug = re.sub(r"[^A-Za-z0-9.,:/_<>=+-]+", "_", self.reason).strip("_")[:80]
        return f"FAIL:{slug or 'unknown'}"


def side_python(check: str) -> Path:
    return ENGINES / ENV_OF[check] / "bin" / "python"


def run_side(check: str, inputs: dict, work: Path) -> Result:
    """Run the check's script (engines/checks/) in its side environment with `inputs` as JSON; its last line is the verdict."""
    python = side_python(check)
    if not python.exists():
        return Result(False, f"no side environment {python.parent.parent}: run engines/setup.sh")
    request = work / f"{check}.json"
    request.write_text(json.dumps(inputs, indent=2))
    env = {
        **os.environ,
        "VLLM_TARGET_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("PYTHONPATH", None)  # glmlab's own code must not leak into the engine's environment
    try:
        done = subprocess.run(
            [str(python), str(ROOT / "engines" / "checks" / f"{SCRIPT_OF[check]}.py"), str(request)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=env,
            cwd=work,
        )
    except subprocess.TimeoutExpired:
        return Result(False, f"timed out after {TIMEOUT_S} s")
    (work / f"{check}.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    lines = done.stdout.strip().splitlines()
    try:
        verdict = json.loads(lines[-1])
        return Result(bool(verdict["ok"]), str(verdict.get("reason", "")))
    except (IndexError, ValueError, KeyError, TypeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Result(False, f"exit {done.returncode}: {tail}")


# ---- what glmlab writes ----------------------------------------------------------------------------


class Exports:
    """The tiny model, its adapters and their exports, each made once on first use."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._made: dict[str, Path] = {}

    def _once(self, key: str, make: Callable[[Path], Path]) -> Path:
        if key not in self._made:
            self._made[key] = make(self.work / key)
        return self._made[key]

    @property
    def tiny(self) -> Path:
        from glmlab import tiny

        return self._once("home", lambda home: tiny.ensure(home))

    def adapter(self, name: str) -> Path:
        """Raw adapters (as training writes them) of the tiny model; see ADAPTERS."""
        from glmlab.adapters import random_adapter
        from glmlab.lora.recipe import VISION_TARGETS

        options = dict(ADAPTERS[name])
        dora = options.pop("use_dora", False)
        vision = options.pop("vision", None)
        if vision:  # the vision targets a recipe's adapt_vision trains, the tower's less attn.qkv, or qkv
            targets = VISION_TARGETS.get(vision) or {"tower": TOWER_SERVED, "qkv": QKV}[vision]
            options["target_modules"] = f"({options['target_modules']}|{targets})"

        def make(out: Path) -> Path:
            path = random_adapter(self.tiny, out, **options)
            if dora:  # random_adapter writes plain LoRA; the flag is what vLLM and glmlab read
                config = json.loads((path / "adapter_config.json").read_text())
                (path / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
            return path

        return self._once(f"adapters/{name}", make)

    def vllm_export(self, name: str) -> Path:
        return self._once(f"vllm/{name}", lambda out: glmlab_export(self.adapter(name), out, "vllm"))

    def merged(self, name: str) -> Path:
        return self._once(f"merged/{name}", lambda out: glmlab_export(self.adapter(name), out, "merged"))


TEXT = r".*language_model\.layers\.\d+\."
ADAPTERS: dict[str, dict] = {
    # exported for vLLM (kept)
    "attention": {"rank": 4, "seed": 1, "target_modules": TEXT + r"self_attn\.(q_proj|k_proj|v_proj|o_proj)"},
    "all_text": {
        "rank": 8,
        "alpha": 16,
        "seed": 2,
        "target_modules": TEXT + r"(self_attn\.(q|k|v|o)_proj|mlp\.(gate_up|down)_proj)",
    },
    # with vision modules: served through vLLM's tower/connector LoRA (the blocks' attn.qkv dropped)
    "vision_all": {"rank": 4, "seed": 3, "target_modules": TEXT + r"self_attn\.(q|v)_proj", "vision": "all"},
    "tower": {
        "rank": 8,
        "alpha": 16,
        "seed": 6,
        "target_modules": TEXT + r"self_attn\.o_proj",
        "vision": "tower",
    },
    "merger": {"rank": 4, "seed": 7, "target_modules": TEXT + r"mlp\.down_proj", "vision": "merger"},
    # vision modules vLLM has no LoRA layer for: dropped on export, refused by glmlab's serve line as they are
    "qkv": {"rank": 4, "seed": 8, "target_modules": TEXT + r"self_attn\.q_proj", "vision": "qkv"},
    # refused by glmlab's vLLM export
    "modules_to_save": {"rank": 4, "seed": 4, "modules_to_save": ["lm_head"]},
    "dora": {"rank": 4, "seed": 5, "use_dora": True},
}
# a recipe's `adapt_vision: all` less the blocks' attn.qkv, which vLLM has no LoRA layer for
TOWER_SERVED = r".*visual\.(blocks\.\d+\.(attn\.proj|mlp\.(gate_proj|up_proj|down_proj))|merger\.(proj|gate_proj|up_proj|down_proj))"
QKV = r".*visual\.blocks\.\d+\.attn\.qkv"
EXPORTED = ("attention", "all_text", "vision_all", "tower", "merger")
IMAGES = ("tower", "merger")  # every vision module of theirs is served: vLLM's image embeddings = glmlab's
REFUSED = ("modules_to_save", "dora")  # by glmlab's export
SERVED_AS_IS_REFUSED = ("vision_all", "qkv")  # by glmlab's serve line: vision gate/up unfused, attn.qkv


def glmlab_cli(*args: str) -> str:
    """Run the `glmlab` command line users run (this environment's glmlab) and return what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", "from glmlab.cli import app; app()", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"glmlab {shlex.join(args)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def glmlab_export(adapter: Path, out: Path, fmt: str) -> Path:
    """`glmlab export ADAPTER --format FMT --out OUT`."""
    glmlab_cli("export", str(adapter), "--format", fmt, "--out", str(out))
    return out


def glmlab_refuses_to_serve(adapter: Path) -> str | None:
    """glmlab's refusal to put `adapter` as it is on a `vllm serve` line, None when it does."""
    from glmlab.errors import ConfigError
    from glmlab.serve.engines.vllm import vllm_command
    from glmlab.serve.settings import ServerSettings

    try:
        vllm_command(ServerSettings(model="tiny", adapters={adapter.name: str(adapter)}))
    except ConfigError as error:
        return str(error)
    return None


def glmlab_refuses(adapter: Path, out: Path) -> str | None:
    """glmlab's own refusal of `adapter` for vLLM (the error message), None when it exports it."""
    from glmlab.errors import ConfigError
    from glmlab.export import export_vllm

    try:
        export_vllm(adapter, out)
    except ConfigError as error:
        return str(error)
    return None


# ---- the checks' inputs ----------------------------------------------------------------------------


def vllm_args_inputs(exports: Exports) -> dict:
    """Every kind of `vllm serve` line glmlab writes, as argv lists (vllm_command and the CLI's dry run)."""
    from glmlab.serve.engines.vllm import vllm_command
    from glmlab.serve.settings import ServerSettings

    served = {
        "attention": str(exports.vllm_export("attention")),
        "all_text": str(exports.vllm_export("all_text")),
    }
    with_vision = {**served, "vision": str(exports.vllm_export("vision_all"))}
    roots = [str(exports.work / "vllm")]
    variants = {
        "base": ServerSettings(model="tiny"),
        "hub_id": ServerSettings(model="zai-org/GLM-4.6V-Flash", host="0.0.0.0", port=8000, api_key="k"),
        "adapters": ServerSettings(model="tiny", adapters=served),
        "runtime_lora": ServerSettings(model="tiny", adapter_roots=roots),
        "adapters_and_runtime": ServerSettings(model="tiny", adapters=served, adapter_roots=roots),
        "tower_lora": ServerSettings(model="tiny", adapters=with_vision),
        "runtime_tower_lora": ServerSettings(model="tiny", adapter_roots=roots, tower_connector_lora=True),
        "quantize_4bit": ServerSettings(model="tiny", quantize="4bit", dtype="bfloat16"),
        "limits": ServerSettings(
            model="tiny",
            max_image_pixels=1024 * 1024,
            max_model_len=4096,
            served_model_name="glm",
            api_key="k",
        ),
    }
    commands = {name: vllm_command(settings).argv for name, settings in variants.items()}
    commands["passthrough"] = vllm_command(
        variants["adapters"], ["--max-model-len", "32768", "--gpu-memory-utilization", "0.85"]
    ).argv
    dry_runs = {
        "cli_dry_run": ["--model", "tiny", "--adapter", f"attention={served['attention']}"],
        "cli_dry_run_runtime": ["--model", "tiny", "--adapter-root", roots[0], "--api-key", "k"],
        "cli_dry_run_passthrough": ["--model", "tiny", "--", "--max-model-len", "32768"],
        "cli_dry_run_tower": ["--model", "tiny", "--adapter", f"vision={with_vision['vision']}"],
    }
    for name, args in dry_runs.items():
        printed = glmlab_cli("serve", "--engine", "vllm", "--dry-run", *args)
        line = next(line for line in printed.splitlines() if " serve " in line)
        words = shlex.split(line)
        commands[name] = words[next(i for i, word in enumerate(words) if word == "vllm") :]
    return {"commands": commands}


def vllm_lora_inputs(exports: Exports) -> dict:
    adapters = {name: {"path": str(exports.vllm_export(name)), "expect": "load"} for name in EXPORTED}
    for name in REFUSED:
        refusal = glmlab_refuses(exports.adapter(name), exports.work / "refused" / name)
        if refusal is None:
            raise RuntimeError(f"glmlab exported the {name} adapter for vLLM; it should refuse it")
        adapters[name] = {"path": str(exports.adapter(name)), "expect": "reject", "glmlab": refusal}
    for name in SERVED_AS_IS_REFUSED:
        refusal = glmlab_refuses_to_serve(exports.adapter(name))
        if refusal is None:
            raise RuntimeError(
                f"glmlab serves the raw {name} adapter with vLLM; it should ask for its export"
            )
        adapters[f"{name}_as_trained"] = {
            "path": str(exports.adapter(name)),
            "expect": "reject",
            "glmlab": refusal,
        }
    manifests = [json.loads((exports.vllm_export(name) / MANIFEST).read_text()) for name in EXPORTED]
    return {
        "checkpoint": str(exports.tiny),
        "max_lora_rank": max(manifest["max_lora_rank"] for manifest in manifests),
        "adapters": adapters,
        "images": {name: str(image_embeddings(exports, name)) for name in IMAGES},
    }


def image_embeddings(exports: Exports, name: str) -> Path:
    """glmlab's image embeddings (the vision tower and merger's output) of the square, base and with the
    raw adapter `name` (as trained, through glmlab's own adapter loading), and the processed image."""
    import torch
    from safetensors.torch import save_file

    import glmlab

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vlm = glmlab.load(str(exports.tiny), dtype="float32", device="cpu")
    vlm.load_adapter(exports.adapter(name), name, activate=False)
    content = [
        {"type": "image", "image": str(square_image(exports.work))},
        {"type": "text", "text": IMAGE_PROMPT},
    ]
    features = vlm._to_device(vlm.prepare([{"role": "user", "content": content}]).features)
    pixels, grid = features["pixel_values"], features["image_grid_thw"]
    tensors = {"pixel_values": pixels, "image_grid_thw": grid}
    for key, adapter in (("base", None), ("adapted", name)):
        with vlm.using_adapter(adapter), torch.inference_mode():
            tensors[key] = torch.cat(vlm.model.model.get_image_features(pixels, grid).pooler_output)
    path = exports.work / "images" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path))
    return path


def greedy_references(path: Path, image: bool) -> list[dict]:
    """glmlab's prompts and greedy tokens for the checkpoint at `path`: each {messages, prompt_ids, tokens}."""
    import torch

    import glmlab

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vlm = glmlab.load(str(path), dtype="float32", device="cpu")
    cases = [{"text": prompt, "image": None} for prompt in TEXT_PROMPTS]
    if image:
        cases.append({"text": IMAGE_PROMPT, "image": str(square_image(path.parent))})
    references = []
    for case in cases:
        content = [{"type": "text", "text": case["text"]}]
        if case["image"]:
            content.insert(0, {"type": "image", "image": case["image"]})
        messages = [{"role": "user", "content": content}]
        prompt = vlm.prepare(messages)
        inputs = vlm._to_device(prompt.features)
        with torch.inference_mode():
            output = vlm.model.generate(
                **inputs,
                do_sample=False,
                repetition_penalty=1.0,  # plain greedy: not the checkpoint's generation_config
                max_new_tokens=MAX_NEW_TOKENS,
                min_new_tokens=MAX_NEW_TOKENS,
            )
        references.append(
            {
                **case,
                "messages": messages,
                "prompt_text": prompt.text,
                "prompt_ids": inputs["input_ids"][0].tolist(),
                "tokens": output[0, inputs["input_ids"].shape[1] :].tolist(),
            }
        )
    return references


def square_image(folder: Path) -> Path:
    from PIL import Image, ImageDraw

    # 112x84: both sides are multiples of 28 (patch 14 x merge 2) inside every pixel budget, so no engine
    # resizes it (transformers' and llama.cpp's resizing rules differ)
    path = folder / "square.png"
    if not path.exists():
        image = Image.new("RGB", (112, 84), "white")
        ImageDraw.Draw(image).rectangle([28, 14, 84, 70], fill="red")
        image.save(path)
    return path


def merged_inputs(exports: Exports) -> dict:
    merged = exports.merged("attention")
    return {"checkpoint": str(merged), "cases": greedy_references(merged, image=True)}


def gguf_inputs(exports: Exports) -> dict:
    """`glmlab export --format gguf` of the tiny adapter (f16, merged by the export) and of its merged
    checkpoint (q8_0, q4_k_m), with llama.cpp's converter from the llama environment."""
    merged = exports.merged("attention")
    llama = ["--llama-cpp", str(LLAMA_CPP), "--llama-python", str(side_python("gguf"))]
    files = {}
    for quant in GGUF_QUANTS:
        source = exports.adapter("attention") if quant == "f16" else merged
        out = exports.work / f"gguf-{quant}"
        glmlab_cli("export", str(source), "--format", "gguf", "--quant", quant, "--out", str(out), *llama)
        manifest = json.loads((out / "glmlab_export.json").read_text())
        files[quant] = {
            "model": str(out / manifest["model_file"]),
            "mmproj": str(out / manifest["mmproj_file"]),
            "pre_tokenizer": manifest["pre_tokenizer"],
        }
    return {"exports": files, "cases": greedy_references(merged, image=True)}


INPUTS: dict[str, Callable[[Exports], dict]] = {
    "vllm_args": vllm_args_inputs,
    "vllm_lora": vllm_lora_inputs,
    "merged_transformers": merged_inputs,
    "gguf": gguf_inputs,
}


def run(checks: list[str], work: Path) -> dict[str, Result]:
    os.environ["GLMLAB_HOME"] = str(work / "home")
    os.environ["HF_HUB_OFFLINE"] = "1"
    exports = Exports(work)
    results = {}
    for check in checks:
        start = time.perf_counter()
        if not side_python(check).exists():
            results[check] = Result(
                False, f"no side environment .engines/{ENV_OF[check]}: run engines/setup.sh"
            )
        else:
            try:
                inputs = INPUTS[check](exports)
            except Exception as error:  # a failure of glmlab's side is this check's failure, said as such
                results[check] = Result(False, f"glmlab: {type(error).__name__}: {error}")
            else:
                results[check] = run_side(check, inputs, work)
        verdict = ("ok: " if results[check].ok else "FAIL: ") + results[check].reason
        print(f"engines: {check} ({time.perf_counter() - start:.0f} s): {verdict}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(CHECKS), help="comma-separated checks to run")
    parser.add_argument("--work", type=Path, help="work folder (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder (logs, exports)")
    args = parser.parse_args(argv)
    checks = [check for check in args.only.split(",") if check]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        results = run(checks, args.work.resolve())
    else:
        work = Path(tempfile.mkdtemp(prefix="glmlab-engines-"))
        results = run(checks, work)
        if args.keep or not all(result.ok for result in results.values()):
            print(f"engines: logs and exports in {work}", flush=True)
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print("ENGINES " + " ".join(f"{check}={results[check].field()}" for check in checks), flush=True)
    return 0 if all(result.ok for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
