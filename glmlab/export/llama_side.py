"""The part of `glmlab export --format gguf` that runs in llama.cpp's Python (`--llama-python`).

Not imported by glmlab: `glmlab.export.gguf` runs this file as a script with the interpreter that has
llama.cpp's converter requirements (and maybe llama-cpp-python), which need not have glmlab. It uses
llama.cpp's own code only, from the checkout it is given; it copies none of it.

    python llama_side.py probe --converter C
    python llama_side.py convert --converter C [--pre-tokenizer NAME] --report FILE -- CONVERTER_ARGS...
    python llama_side.py quantize IN OUT TYPE       # llama-cpp-python's llama_model_quantize

Each prints one JSON object as its last line of standard output: {"ok": true, ...} or
{"ok": false, "error": KIND, "detail": TEXT}, KIND one of "missing_module", "pre_tokenizer",
"converter", "quantizer".
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this file's folder leads sys.path, and glmlab's gguf.py there would hide llama.cpp's
# gguf package from the converter.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]


class Failed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def load_converter(converter: str):
    """Import llama.cpp's convert_hf_to_gguf.py as a module (its folder first on sys.path, for its
    `conversion` package and gguf-py)."""
    folder = str(Path(converter).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", converter)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as error:
        raise Failed("missing_module", error.name or str(error)) from None
    return module


def text_model_class(module):
    """The converter's TextModel: in convert_hf_to_gguf.py itself, or in its `conversion` package
    (newer llama.cpp)."""
    found = getattr(module, "TextModel", None)
    return found if found is not None else importlib.import_module("conversion").TextModel


def quantizer() -> str | None:
    """llama-cpp-python's version when it is here with llama_model_quantize, else None."""
    try:
        import llama_cpp
    except Exception:  # absent, or its shared library does not load
        return None
    if not hasattr(llama_cpp, "llama_model_quantize"):
        return None
    return f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')}"


def probe(args) -> dict:
    load_converter(args.converter)
    return {"quantizer": quantizer(), "python": sys.executable}


def convert(args) -> dict:
    """Run the converter's main() with `args.rest`, answering its pre-tokenizer question with
    args.pre_tokenizer when it does not recognise the tokenizer itself (llama.cpp's files unchanged)."""
    module = load_converter(args.converter)
    model_class = text_model_class(module)
    recognise = model_class.get_vocab_base_pre
    answered: dict = {}

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            answered.update(pre_tokenizer=recognise(self, tokenizer), source="recognised")
        except NotImplementedError:
            if not args.pre_tokenizer:
                raise Failed("pre_tokenizer", "llama.cpp's converter does not recognise it") from None
            answered.update(pre_tokenizer=args.pre_tokenizer, source="given")
        return answered["pre_tokenizer"]

    model_class.get_vocab_base_pre = get_vocab_base_pre
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    sys.argv = [args.converter, *rest]
    try:
        module.main()
    except SystemExit as done:
        if done.code not in (0, None):
            raise Failed("converter", f"exit status {done.code}") from None
    Path(args.report).write_text(json.dumps(answered))
    return answered


def quantize(args) -> dict:
    import ctypes

    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{args.type.upper()}", None)
    if ftype is None:
        raise Failed("quantizer", f"llama-cpp-python has no LLAMA_FTYPE_MOSTLY_{args.type.upper()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(args.source.encode(), args.target.encode(), ctypes.byref(params))
    if status != 0:
        raise Failed("quantizer", f"llama_model_quantize returned {status}")
    return {"quantizer": quantizer()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    probing = commands.add_parser("probe")
    probing.add_argument("--converter", required=True)
    probing.set_defaults(run=probe)
    converting = commands.add_parser("convert")
    converting.add_argument("--converter", required=True)
    converting.add_argument("--pre-tokenizer", default="")
    converting.add_argument("--report", required=True)
    converting.add_argument("rest", nargs=argparse.REMAINDER)
    converting.set_defaults(run=convert)
    quantizing = commands.add_parser("quantize")
    quantizing.add_argument("source")
    quantizing.add_argument("target")
    quantizing.add_argument("type")
    quantizing.set_defaults(run=quantize)
    args = parser.parse_args(argv)
    try:
        result = {"ok": True, **args.run(args)}
    except Failed as failure:
        result = {"ok": False, "error": failure.kind, "detail": failure.detail}
    sys.stdout.flush()
    print("\n" + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
