"""The GGUF hand-off: llama.cpp's own converter turns a merged checkpoint into an f16 GGUF (and the
vision projector into an mmproj GGUF), llama.cpp loads it through llama-cpp-python, and its greedy
tokens on text prompts equal glmlab's.

Runs in the llama environment. Request: {"checkpoint": DIR, "converter": convert_hf_to_gguf.py,
"pre_tokenizer": NAME, "out": DIR, "cases": [{text, prompt_text, prompt_ids, tokens}]}.

The converter names a BPE tokenizer's pre-tokenizer by the hash of its tokens on a probe text; a
checkpoint whose tokenizer it does not know is refused. The request's pre_tokenizer answers that
question for such a checkpoint (the tiny model's byte-level tokenizer: llama.cpp's "gpt-2"), here, at
run time: llama.cpp's files are not changed.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

from common import CheckFailed, main


def convert(converter: str, pre_tokenizer: str, args: list[str]) -> None:
    """Run llama.cpp's converter, answering its pre-tokenizer question with `pre_tokenizer` when it
    does not recognise the tokenizer itself."""
    sys.path.insert(0, str(Path(converter).parent))
    from conversion import base

    recognise = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return recognise(self, tokenizer)
        except NotImplementedError:
            return pre_tokenizer

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [converter, *args]
    runpy.run_path(converter, run_name="__main__")


def run_converter(request: dict, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, __file__, "convert", request["converter"], request["pre_tokenizer"], *args],
        capture_output=True,
        text=True,
    )
    print(done.stdout, done.stderr, sep="\n")
    if done.returncode != 0:
        raise CheckFailed(
            f"convert_hf_to_gguf.py {' '.join(args[1:])}: {done.stderr.strip().splitlines()[-1]}"
        )


def check(request: dict) -> str:
    import gguf
    from llama_cpp import Llama, __version__

    out = Path(request["out"])
    out.mkdir(parents=True, exist_ok=True)
    text_gguf, mmproj_gguf = out / "model-f16.gguf", out / "mmproj-f16.gguf"
    checkpoint = request["checkpoint"]
    run_converter(request, checkpoint, "--outtype", "f16", "--outfile", str(text_gguf))
    run_converter(request, checkpoint, "--mmproj", "--outtype", "f16", "--outfile", str(mmproj_gguf))
    projector = gguf.GGUFReader(str(mmproj_gguf)).get_field("clip.projector_type")
    projector_type = projector.contents() if projector else None

    llm = Llama(model_path=str(text_gguf), n_ctx=512, n_threads=2, verbose=False)
    for case in request["cases"]:
        prompt_ids = llm.tokenize(case["prompt_text"].encode(), add_bos=False, special=True)
        if prompt_ids != case["prompt_ids"]:
            raise CheckFailed(
                f"llama.cpp tokenizes {case['prompt_text']!r} as {prompt_ids}, glmlab {case['prompt_ids']}"
            )
        llm.reset()
        tokens = []
        for token in llm.generate(case["prompt_ids"], top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            tokens.append(token)
            if len(tokens) == len(case["tokens"]):
                break
        if tokens != case["tokens"]:
            raise CheckFailed(
                f"greedy tokens of {case['text']!r}: llama.cpp {tokens}, glmlab {case['tokens']}"
            )
    load_projector(llm, mmproj_gguf)
    return (
        f"llama-cpp-python {__version__}: {len(request['cases'])} text prompts equal on the f16 GGUF; "
        f"mmproj (projector {projector_type}) loads in llama.cpp's mtmd with vision; image answers not compared"
    )


def load_projector(llm, mmproj: Path) -> None:
    """llama.cpp's multimodal library (mtmd) loads the mmproj beside the text model and says it sees.

    As llama-cpp-python's Llava15ChatHandler does; the bindings have no GLM-4.6V chat handler, so an
    image question is not asked here (llama.cpp's own `llama-mtmd-cli -m GGUF --mmproj MMPROJ` asks one).
    """
    import llama_cpp.mtmd_cpp as mtmd

    params = mtmd.mtmd_context_params_default()
    params.use_gpu = False
    params.n_threads = 2
    context = mtmd.mtmd_init_from_file(str(mmproj).encode(), llm.model, params)
    if not context:
        raise CheckFailed(f"llama.cpp's mtmd does not load {mmproj.name}")
    try:
        if not mtmd.mtmd_support_vision(context):
            raise CheckFailed(f"llama.cpp's mtmd loads {mmproj.name} but reports no vision support")
    finally:
        mtmd.mtmd_free(context)


if __name__ == "__main__":
    if sys.argv[1] == "convert":
        convert(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main(check)
