"""`export_gguf`: a merged checkpoint as GGUF files for llama.cpp, Ollama and LM Studio.

The text model and the vision projector (mmproj) are written by llama.cpp's own converter
(convert_hf_to_gguf.py, from a llama.cpp checkout: `llama_cpp`, else $GLMLAB_LLAMA_CPP), run by the
Python that has its requirements (`llama_python`, else $GLMLAB_LLAMA_PYTHON, else this interpreter)
through llama_side.py. f16 and q8_0 come straight from the converter; q4_k_m is quantised from the f16
file by llama.cpp's quantizer (llama-cpp-python's llama_model_quantize in that Python, else a
`llama-quantize` binary). The projector is always f16. Beside them: an Ollama Modelfile whose
TEMPLATE renders what glmlab's chat template renders for plain chat turns, and a manifest with the
commands that run the files. An adapter is merged first (`export_merged`) inside the staging folder;
a checkpoint folder (or "tiny") is converted as it is.

The converter names a BPE tokenizer's pre-tokenizer from a hash of its output; it knows GLM-4.6V's,
not the tiny checkpoint's (glmlab answers "gpt-2" for that one) nor a custom tokenizer's
(`pre_tokenizer`). glmlab copies no llama.cpp code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from glmlab import tiny
from glmlab.errors import ConfigError, GlmlabError
from glmlab.export.merged import export_merged
from glmlab.export.vllm import MANIFEST, prepare_output
from glmlab.generation import RECOMMENDED_SAMPLING
from glmlab.loading import resolve_source

logger = logging.getLogger(__name__)

QUANTS = ("f16", "q8_0", "q4_k_m")
CONVERTER_QUANTS = ("f16", "q8_0")  # written by the converter itself (--outtype); others quantise its f16
MMPROJ_TYPE = "f16"
DEFAULT_NUM_CTX = 8192
LLAMA_CPP_ENV = "GLMLAB_LLAMA_CPP"
LLAMA_PYTHON_ENV = "GLMLAB_LLAMA_PYTHON"
CONVERTER = "convert_hf_to_gguf.py"
CONVERTER_REQUIREMENTS = "requirements/requirements-convert_hf_to_gguf.txt"
QUANTIZE_BINARY = "llama-quantize"
SIDE_SCRIPT = Path(__file__).with_name("llama_side.py")
GET_LLAMA_CPP = (
    "Get it with `git clone https://github.com/ggml-org/llama.cpp` and `pip install -r "
    f"llama.cpp/{CONVERTER_REQUIREMENTS}`, then pass --llama-cpp llama.cpp (or set {LLAMA_CPP_ENV}); "
    "or run `make engines` in a checkout of glmlab and pass --llama-cpp "
    ".engines/llama-src/vendor/llama.cpp --llama-python .engines/llama/bin/python."
)
# The turn structure of glmlab/templates/glm46v_chat.jinja (GLM-4.6V's own) for plain chat turns and
# the default generation prompt (thinking on: the model opens <think> itself), as a Go template for
# Ollama. Earlier assistant turns keep an empty think block, as the Jinja template renders them.
OLLAMA_TEMPLATE = """[gMASK]<sop>
{{- range .Messages }}
{{- if eq .Role "system" }}<|system|>
{{ .Content }}
{{- else if eq .Role "user" }}<|user|>
{{ .Content }}
{{- else if eq .Role "assistant" }}<|assistant|>
<think></think>
{{- if .Content }}
{{ .Content }}
{{- end }}
{{- end }}
{{- end }}<|assistant|>
"""
STOP_TOKENS = ("<|user|>", "<|observation|>", "<|endoftext|>")  # GLM-4.6V's eos tokens
# glmlab's sampling names -> (Ollama PARAMETER, llama.cpp option)
SAMPLING_NAMES = {
    "temperature": ("temperature", "--temp"),
    "top_p": ("top_p", "--top-p"),
    "top_k": ("top_k", "--top-k"),
    "repetition_penalty": ("repeat_penalty", "--repeat-penalty"),
}


@dataclass(frozen=True)
class LlamaCpp:
    """A llama.cpp checkout whose converter the given Python can run, and the quantizer found."""

    checkout: Path
    python: str
    quantizer: str | None  # "llama-cpp-python X" in that Python, else None

    @property
    def converter(self) -> Path:
        return self.checkout / CONVERTER


@dataclass
class GgufExport:
    """What `export_gguf` wrote and how to run it."""

    path: Path
    quant: str
    model_file: str  # file names inside `path`
    mmproj_file: str
    modelfile: str
    pre_tokenizer: str  # what the GGUF's tokenizer.ggml.pre says
    pre_tokenizer_source: str  # "recognised" by the converter, or "given"
    commands: dict[str, str]
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of each file written
    seconds: dict[str, float] = field(default_factory=dict)  # time of each step

    def to_dict(self) -> dict:
        return {**asdict(self), "format": "gguf", "path": str(self.path)}


def export_gguf(
    source: str | Path,
    out: str | Path,
    *,
    quant: str = "f16",
    llama_cpp: str | Path | None = None,
    llama_python: str | None = None,
    pre_tokenizer: str | None = None,
    model: str | None = None,
    name: str | None = None,
    num_ctx: int | None = None,
    overwrite: bool = False,
) -> GgufExport:
    """Write `source` (a LoRA adapter, merged first; a checkpoint folder; or "tiny") to `out` as GGUF:
    model-QUANT.gguf, mmproj-f16.gguf, an Ollama Modelfile and the manifest. Returns what was written.

    quant: "f16" | "q8_0" | "q4_k_m". llama_cpp: a llama.cpp checkout (default $GLMLAB_LLAMA_CPP).
    llama_python: the Python with the converter's requirements (default $GLMLAB_LLAMA_PYTHON, else
    this one). pre_tokenizer: llama.cpp's name for the tokenizer's pre-tokenizer when its converter
    does not recognise it (the tiny checkpoint's is "gpt-2", given automatically). model: an adapter's
    base model (default: its own). name: the Ollama model name (default: the folder name of `out`).
    num_ctx: the context the Modelfile and the llama-server line ask for (default DEFAULT_NUM_CTX).
    """
    if quant not in QUANTS:
        raise ConfigError(f"--quant {quant}: choose one of {', '.join(QUANTS)}.")
    num_ctx = DEFAULT_NUM_CTX if num_ctx is None else num_ctx
    if num_ctx < 1:
        raise ConfigError(f"--num-ctx {num_ctx}: give a positive number of tokens.")
    llama = find_llama_cpp(llama_cpp, llama_python)
    quantize = quantizer(llama) if quant not in CONVERTER_QUANTS else None
    checkpoint, adapter = _source(source, model)
    origin = str(checkpoint.resolve())
    out = Path(out).expanduser()
    name = ollama_name(name or out.resolve().name)
    seconds: dict[str, float] = {}
    with prepare_output(out, overwrite, checkpoint) as staging:
        if adapter:
            start = time.perf_counter()
            checkpoint = export_merged(checkpoint, staging / ".merged", model=model)
            seconds["merge"] = _since(start)
        pre = pre_tokenizer or known_pre_tokenizer(checkpoint)
        model_file, mmproj_file = f"model-{quant}.gguf", f"mmproj-{MMPROJ_TYPE}.gguf"
        start = time.perf_counter()
        converted = staging / (model_file if quantize is None else ".model-f16.gguf")
        answered = _convert(llama, checkpoint, converted, quant if quantize is None else "f16", pre)
        seconds["convert"] = _since(start)
        if (
            pre_tokenizer
            and answered["source"] == "recognised"
            and answered["pre_tokenizer"] != pre_tokenizer
        ):
            logger.warning(
                "--pre-tokenizer %s not used: llama.cpp's converter recognises the tokenizer as %s",
                pre_tokenizer,
                answered["pre_tokenizer"],
            )
        if quantize is not None:
            start = time.perf_counter()
            quantize(converted, staging / model_file, quant)
            converted.unlink()
            seconds["quantize"] = _since(start)
        start = time.perf_counter()
        _convert(llama, checkpoint, staging / mmproj_file, MMPROJ_TYPE, pre, mmproj=True)
        seconds["mmproj"] = _since(start)
        if adapter:
            shutil.rmtree(checkpoint)
        (staging / "Modelfile").write_text(modelfile(model_file, mmproj_file, num_ctx))
        export = GgufExport(
            out,
            quant,
            model_file,
            mmproj_file,
            "Modelfile",
            answered["pre_tokenizer"],
            answered["source"],
            run_commands(out, model_file, mmproj_file, name, num_ctx),
            {path.name: path.stat().st_size for path in sorted(staging.iterdir())},
            seconds,
        )
        manifest = {
            **export.to_dict(),
            "source": origin,
            "adapter": adapter,
            "llama_cpp": str(llama.checkout),
            "llama_python": llama.python,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    logger.info("exported %s as GGUF (%s) to %s in %.1f s", source, quant, out, sum(seconds.values()))
    return export


def find_llama_cpp(llama_cpp: str | Path | None = None, llama_python: str | None = None) -> LlamaCpp:
    """The llama.cpp checkout and Python to convert with, checked by importing the converter there."""
    given = llama_cpp or os.environ.get(LLAMA_CPP_ENV)
    if not given:
        raise ConfigError(
            f"GGUF export needs llama.cpp's converter ({CONVERTER}); none given. {GET_LLAMA_CPP}"
        )
    checkout = Path(given).expanduser().resolve()
    if not (checkout / CONVERTER).is_file():
        raise ConfigError(
            f"{checkout}: holds no {CONVERTER}, so it is no llama.cpp checkout. {GET_LLAMA_CPP}"
        )
    python = llama_python or os.environ.get(LLAMA_PYTHON_ENV) or sys.executable
    found = shutil.which(python)
    if found is None:
        raise ConfigError(f"--llama-python {python}: no such Python interpreter.")
    found = os.path.abspath(found)  # not resolved: a virtual environment's python is a link
    result = _side(found, "probe", "--converter", str(checkout / CONVERTER))
    if not result["ok"]:
        raise ConfigError(_side_error(result, found, checkout))
    return LlamaCpp(checkout, found, result.get("quantizer"))


def quantizer(llama: LlamaCpp):
    """A function (source, target, quant) that quantises a GGUF with llama.cpp's quantizer:
    llama-cpp-python in llama.python, else a llama-quantize binary (on PATH or in the checkout's
    build/bin). Refused, naming both, when neither is there."""
    if llama.quantizer:

        def with_bindings(source: Path, target: Path, quant: str) -> None:
            result = _side(llama.python, "quantize", str(source), str(target), quant)
            if not result["ok"]:
                raise GlmlabError(_side_error(result, llama.python, llama.checkout))

        return with_bindings
    binary = shutil.which(QUANTIZE_BINARY) or shutil.which(
        QUANTIZE_BINARY, path=str(llama.checkout / "build" / "bin")
    )
    if binary is None:
        raise ConfigError(
            f"--quant q4_k_m needs llama.cpp's quantizer, and neither is here: llama-cpp-python in "
            f"{llama.python} (`{llama.python} -m pip install llama-cpp-python`) nor a {QUANTIZE_BINARY} "
            f"binary on PATH or in {llama.checkout}/build/bin (`cmake -B build && cmake --build build "
            f"--target {QUANTIZE_BINARY}` in the checkout). Or choose --quant f16 or q8_0, which the "
            "converter writes itself."
        )

    def with_binary(source: Path, target: Path, quant: str) -> None:
        done = subprocess.run(
            [binary, str(source), str(target), quant.upper()], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise GlmlabError(
                f"{binary} failed (exit {done.returncode}): {_tail(done.stderr or done.stdout)}"
            )

    return with_binary


def modelfile(model_file: str, mmproj_file: str, num_ctx: int) -> str:
    """The Ollama Modelfile: the model and its projector (paths relative to the Modelfile), the chat
    template, GLM-4.6V's stop tokens, its recommended sampling and the context size."""
    lines = [
        "# Ollama Modelfile written by `glmlab export --format gguf`; create the model with",
        "#   ollama create NAME -f Modelfile",
        f"FROM ./{model_file}",
        f"FROM ./{mmproj_file}",
        f'TEMPLATE """{OLLAMA_TEMPLATE}"""',
        *(f'PARAMETER stop "{token}"' for token in STOP_TOKENS),
        *(f"PARAMETER {ollama} {RECOMMENDED_SAMPLING[key]}" for key, (ollama, _) in SAMPLING_NAMES.items()),
        f"PARAMETER num_ctx {num_ctx}",
    ]
    return "\n".join(lines) + "\n"


def run_commands(out: Path, model_file: str, mmproj_file: str, name: str, num_ctx: int) -> dict[str, str]:
    """The command lines that run the export: llama.cpp's server and CLI (with the projector), Ollama."""
    folder = Path(out).expanduser().resolve()
    model, mmproj = shlex.quote(str(folder / model_file)), shlex.quote(str(folder / mmproj_file))
    sampling = " ".join(
        f"{option} {RECOMMENDED_SAMPLING[key]}" for key, (_, option) in SAMPLING_NAMES.items()
    )
    return {
        "llama_server": f"llama-server -m {model} --mmproj {mmproj} --jinja -c {num_ctx} {sampling} --port 8080",
        "llama_mtmd_cli": f"llama-mtmd-cli -m {model} --mmproj {mmproj} {sampling} --image IMAGE.png "
        "-p 'What is in this image?'",
        "ollama": f"ollama create {name} -f {shlex.quote(str(folder / 'Modelfile'))} && ollama run {name}",
    }


def ollama_name(name: str) -> str:
    """An Ollama model name (lowercase letters, digits, '.', '-', '_') made from `name`."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return cleaned or "glmlab-gguf"


def _source(source: str | Path, model: str | None) -> tuple[Path, bool]:
    """(folder, is_adapter): a LoRA adapter folder, or a checkpoint folder (or "tiny") as it is."""
    path = Path(source).expanduser()
    if (path / "adapter_config.json").is_file():
        return path, True
    if model is not None:
        raise ConfigError(f"{source}: is a checkpoint, not an adapter; --model names an adapter's base only.")
    if not path.is_dir() and str(source) != "tiny":
        raise ConfigError(
            f"{source}: no such folder. Pass a LoRA adapter folder, a checkpoint folder or 'tiny' (a hub "
            "model must be downloaded first: `hf download ID --local-dir DIR`)."
        )
    try:
        resolved = Path(resolve_source(source))
    except GlmlabError as error:
        raise ConfigError(f"{error} (or a LoRA adapter folder, with adapter_config.json)") from None
    return resolved, False


def known_pre_tokenizer(checkpoint: Path) -> str | None:
    """The pre-tokenizer glmlab knows for `checkpoint`'s tokenizer (the tiny one's), after refusing a
    BPE tokenizer without merges, which llama.cpp cannot load."""
    path = checkpoint / "tokenizer.json"
    if not path.is_file():
        return None
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    bpe = tokenizer.get("model") or {}
    if bpe.get("type") == "BPE" and not bpe.get("merges"):
        raise ConfigError(
            f"{path}: a BPE tokenizer without merges, which llama.cpp refuses to load. A tiny checkpoint "
            "built by an older glmlab has one: rebuild it (delete it from GLMLAB_HOME's tiny folder)."
        )
    return tiny.LLAMA_CPP_PRE_TOKENIZER if tiny.is_tiny_tokenizer(tokenizer) else None


def _convert(
    llama: LlamaCpp, checkpoint: Path, target: Path, outtype: str, pre: str | None, *, mmproj: bool = False
) -> dict:
    """Run llama.cpp's converter on `checkpoint`; returns the pre-tokenizer it wrote and where it came from."""
    report = target.with_name(f".{target.name}.report.json")
    args = ["--converter", str(llama.converter), "--pre-tokenizer", pre or "", "--report", str(report), "--"]
    args += [
        str(checkpoint),
        *(["--mmproj"] if mmproj else []),
        "--outtype",
        outtype,
        "--outfile",
        str(target),
    ]
    result = _side(llama.python, "convert", *args)
    if not result["ok"]:
        if result.get("error") == "pre_tokenizer":
            raise ConfigError(
                f"{checkpoint}: llama.cpp's converter does not recognise this tokenizer's pre-tokenizer. "
                "Pass --pre-tokenizer NAME with llama.cpp's name for it (one of LLAMA_VOCAB_PRE_TYPE in "
                "llama.cpp's src/llama-vocab.cpp, e.g. gpt-2, llama-bpe, qwen2), or update llama.cpp."
            )
        raise GlmlabError(_side_error(result, llama.python, llama.checkout))
    answered = json.loads(report.read_text()) if report.exists() else {}
    report.unlink(missing_ok=True)
    if not target.is_file():
        raise GlmlabError(f"llama.cpp's converter ran but wrote no {target.name}: {_tail(result['output'])}")
    return {"pre_tokenizer": answered.get("pre_tokenizer", ""), "source": answered.get("source", "")}


def _side(python: str, *args: str) -> dict:
    """Run llama_side.py in `python`; its last line of output is the result, with the output added."""
    done = subprocess.run([python, str(SIDE_SCRIPT), *args], capture_output=True, text=True)
    output = done.stderr + done.stdout
    logger.debug("llama_side %s: %s", args[0], output)
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"ok": False, "error": "crashed", "detail": f"exit {done.returncode}"}
    return {**result, "output": output}


def _side_error(result: dict, python: str, checkout: Path) -> str:
    if result.get("error") == "missing_module":
        return (
            f"{python} cannot run llama.cpp's converter: it has no module {result['detail']!r}. Install "
            f"the converter's requirements there (`{python} -m pip install -r {checkout / CONVERTER_REQUIREMENTS}`) "
            "or pass --llama-python with a Python that has them (`make engines` in a checkout of glmlab "
            "builds .engines/llama/bin/python)."
        )
    return f"llama.cpp's {result.get('error')} failed ({result.get('detail')}): {_tail(result['output'])}"


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 2)
