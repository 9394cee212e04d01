"""The GGUF hand-off: what `glmlab export --format gguf` writes (with llama.cpp's own converter and
quantizer), loaded by llama.cpp through llama-cpp-python.

Runs in the llama environment. Request: {"exports": {QUANT: {model, mmproj, pre_tokenizer}},
"cases": [{text, image, prompt_text, prompt_ids, tokens}]} (glmlab's greedy tokens; the case with an
image is asked through llama.cpp's multimodal library, mtmd).

- f16: llama.cpp tokenizes every prompt as glmlab does and its greedy tokens equal glmlab's, on the
  text prompts and on the image question (the image goes through llama.cpp's own GLM-4V projector
  preprocessing and vision tower, from mmproj-f16.gguf);
- q8_0, q4_k_m: the files load and generate (their tokens differ from f16 by rounding; how many of the
  first tokens agree with glmlab's is reported).
"""

from __future__ import annotations

import ctypes

from common import CheckFailed, main

N_CTX = 512
THREADS = 2
IMAGE_IN_TEMPLATE = "<|begin_of_image|><|image|><|end_of_image|>"  # mtmd writes the begin/end tokens itself


def check(request: dict) -> str:
    from llama_cpp import __version__

    exports, cases = request["exports"], request["cases"]
    text_cases = [case for case in cases if not case["image"]]
    image_cases = [case for case in cases if case["image"]]
    f16 = exports["f16"]
    if f16["pre_tokenizer"] != "gpt-2":
        raise CheckFailed(f"the tiny model's GGUF has pre-tokenizer {f16['pre_tokenizer']!r}, not 'gpt-2'")
    llm = load(f16["model"])
    for case in text_cases:
        prompt_ids = llm.tokenize(case["prompt_text"].encode(), add_bos=False, special=True)
        if prompt_ids != case["prompt_ids"]:
            raise CheckFailed(
                f"llama.cpp tokenizes {case['prompt_text']!r} as {prompt_ids}, glmlab {case['prompt_ids']}"
            )
        tokens = greedy(llm, case["prompt_ids"], len(case["tokens"]))
        if tokens != case["tokens"]:
            raise CheckFailed(
                f"greedy tokens of {case['text']!r}: llama.cpp {tokens}, glmlab {case['tokens']}"
            )
    images = [ask_image(llm, f16["mmproj"], case) for case in image_cases]
    quantised = []
    for quant in ("q8_0", "q4_k_m"):
        small = load(exports[quant]["model"])
        case = text_cases[0]
        tokens = greedy(small, case["prompt_ids"], len(case["tokens"]))
        same = next(
            (i for i, (a, b) in enumerate(zip(tokens, case["tokens"], strict=True)) if a != b), len(tokens)
        )
        quantised.append(f"{quant} generates ({same}/{len(tokens)} first tokens as glmlab)")
        del small
    return (
        f"llama-cpp-python {__version__}: {len(text_cases)} text prompts tokenized and answered as glmlab "
        f"on the f16 GGUF; {'; '.join(images)}; {', '.join(quantised)}"
    )


def load(path: str):
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=N_CTX, n_threads=THREADS, verbose=False)


def greedy(llm, prompt_ids: list[int], count: int) -> list[int]:
    llm.reset()
    tokens = []
    for token in llm.generate(prompt_ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        tokens.append(token)
        if len(tokens) == count:
            break
    return tokens


def ask_image(llm, mmproj: str, case: dict) -> str:
    """The image question through mtmd (as llama-cpp-python's MTMDChatHandler feeds it): the prompt
    with mtmd's media marker where the template puts the image, tokenized with the image by
    mtmd_tokenize, evaluated chunk by chunk, then greedy tokens from the logits."""
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd
    import numpy

    params = mtmd.mtmd_context_params_default()
    params.use_gpu = False
    params.n_threads = THREADS
    params.warmup = False
    context = mtmd.mtmd_init_from_file(mmproj.encode(), llm.model, params)
    if not context:
        raise CheckFailed(f"llama.cpp's mtmd does not load {mmproj}")
    bitmap = chunks = None
    try:
        if not mtmd.mtmd_support_vision(context):
            raise CheckFailed(f"llama.cpp's mtmd loads {mmproj} but reports no vision support")
        if IMAGE_IN_TEMPLATE not in case["prompt_text"]:
            raise CheckFailed(f"no {IMAGE_IN_TEMPLATE} in glmlab's prompt {case['prompt_text']!r}")
        text = case["prompt_text"].replace(IMAGE_IN_TEMPLATE, mtmd.mtmd_default_marker().decode()).encode()
        bitmap = mtmd.mtmd_helper_bitmap_init_from_file(context, case["image"].encode(), False)
        chunks = mtmd.mtmd_input_chunks_init()
        given = mtmd.mtmd_input_text()
        given.text, given.text_len, given.add_special, given.parse_special = text, len(text), False, True
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        if mtmd.mtmd_tokenize(context, chunks, ctypes.byref(given), bitmaps, 1) != 0:
            raise CheckFailed("mtmd_tokenize refused glmlab's image prompt")
        prompt_ids = []
        llm.reset()
        llm._ctx.kv_cache_clear()
        for index in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, index)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t()
                pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                tokens = [pointer[i] for i in range(count.value)]
                prompt_ids += tokens
                llm.eval(tokens)
            else:
                image_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                prompt_ids += [case["prompt_ids"][len(prompt_ids)]] * image_tokens  # the <|image|> id
                n_past = llama_cpp.llama_pos(0)
                status = mtmd.mtmd_helper_eval_chunk_single(
                    context, llm._ctx.ctx, chunk, llm.n_tokens, 0, llm.n_batch, False, ctypes.byref(n_past)
                )
                if status != 0:
                    raise CheckFailed(f"mtmd_helper_eval_chunk_single failed ({status})")
                llm.n_tokens = n_past.value
        if prompt_ids != case["prompt_ids"]:
            raise CheckFailed(
                f"mtmd's image prompt has {len(prompt_ids)} tokens ({prompt_ids}), glmlab's "
                f"{len(case['prompt_ids'])} ({case['prompt_ids']})"
            )
        tokens = []
        for _ in case["tokens"]:
            logits = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
            tokens.append(int(numpy.argmax(numpy.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)))))
            llm.eval([tokens[-1]])
        if tokens != case["tokens"]:
            raise CheckFailed(
                f"greedy tokens of the image question {case['text']!r}: llama.cpp {tokens}, glmlab "
                f"{case['tokens']} (same prompt ids, {image_tokens} image tokens)"
            )
        return f"the image question answered as glmlab through mtmd ({image_tokens} image tokens)"
    finally:
        if chunks:
            mtmd.mtmd_input_chunks_free(chunks)
        if bitmap:
            mtmd.mtmd_bitmap_free(bitmap)
        mtmd.mtmd_free(context)


if __name__ == "__main__":
    main(check)
