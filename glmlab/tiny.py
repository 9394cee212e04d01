"""The tiny offline Glm4v checkpoints: real checkpoint folders with random weights, built in seconds.

No machine here can download GLM-4.6V-Flash, yet every code path that loads a hub checkpoint must run
and be tested. `build` writes what a hub snapshot holds (config.json, safetensors weights,
tokenizer.json, processor and chat template files) with the real token ids, token structure and
processor classes, but small layers. Its weights are random: its answers are noise, its shapes and
plumbing are real. Two kinds exist: "tiny" (the dense `glm4v` network of GLM-4.6V-Flash) and
"tiny-moe" (the mixture-of-experts `glm4v_moe` network of GLM-4.5V/4.6V: a dense first layer, then
layers of routed experts, a router and a shared expert), both with the same tokenizer and processor.
The tokenizer is built by hand with the `tokenizers` library because no library
ships a GLM tokenizer offline.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from glmlab.reference import glm45v_config, glm46v_flash_config

logger = logging.getLogger(__name__)

# GLM-4's special tokens at the real checkpoint's ids (its tokenizer; the image and video ids are also in
# its config.json, glmlab/reference). Generation stops on any of EOS_TOKEN_IDS (`<|user|>` is one).
SPECIAL_TOKENS = {
    "<|endoftext|>": 151329,
    "[MASK]": 151330,
    "[gMASK]": 151331,
    "[sMASK]": 151332,
    "<sop>": 151333,
    "<eop>": 151334,
    "<|system|>": 151335,
    "<|user|>": 151336,
    "<|assistant|>": 151337,
    "<|observation|>": 151338,
    "<|begin_of_image|>": 151339,
    "<|end_of_image|>": 151340,
    "<|begin_of_video|>": 151341,
    "<|end_of_video|>": 151342,
    "<|image|>": 151363,
    "<|video|>": 151364,
}
# Single tokens of the real vocabulary whose ids glmlab does not need to match: it places them in the
# free ids between the video and image tokens.
TEXT_SINGLE_TOKENS = [
    "<think>",
    "</think>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
    "/nothink",
    "<tool_call>",
    "</tool_call>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "<tool_response>",
    "</tool_response>",
]
_REAL_TEXT = glm46v_flash_config()["text_config"]
VOCAB_SIZE = _REAL_TEXT["vocab_size"]  # 151552
EOS_TOKEN_IDS = _REAL_TEXT["eos_token_id"]  # <|endoftext|>, <|user|>, <|observation|>
PAD_TOKEN_ID = _REAL_TEXT["pad_token_id"]  # <|endoftext|>

TINY_TEXT = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128
)
TINY_VISION = dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=64)
# GLM-4.5V's layout at small sizes: layer 0 dense, layer 1 mixture-of-experts (4 routed experts, 2 per
# token, one shared expert). head_dim is set apart from hidden_size / heads as in the real model
# (128 x 96 heads over a 4096 hidden size), so code that assumes hidden_size == heads * head_dim fails here.
TINY_MOE_TEXT = dict(
    hidden_size=64,
    head_dim=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    first_k_dense_replace=1,
    moe_intermediate_size=32,
    n_routed_experts=4,
    num_experts_per_tok=2,
)
# name given to glmlab.load -> (the real config it shrinks, its text sizes)
KINDS = {"tiny": (glm46v_flash_config, TINY_TEXT), "tiny-moe": (glm45v_config, TINY_MOE_TEXT)}
# Pixel budget of the tiny checkpoint's processor: small so CPU tests stay fast (a 1024x1024 image
# becomes 224x224 = 16x16 patches = 64 image tokens).
TINY_MAX_IMAGE_PIXELS = 224 * 224  # pixel area; the processor's longest_edge is twice this
CHAT_TEMPLATE = "glm46v_chat.jinja"
TINY_VERSION = 3  # bump when the checkpoint's files change (layout, template), so stale caches are rebuilt
# llama.cpp refuses a BPE vocabulary without merges, so the tokenizer carries one that can never apply
# (make_tokenizer says why); its left side is a filler piece no merge forms.
NEVER_FIRING_MERGE = ("Ġa", "a")
# llama.cpp's name for the tiny tokenizer's pre-tokenizer (GPT-2's byte-level regex), which its GGUF
# converter cannot recognise by itself (glmlab.export.gguf answers for it)
LLAMA_CPP_PRE_TOKENIZER = "gpt-2"


def build(
    path: str | Path,
    seed: int = 0,
    *,
    text: dict | None = None,
    vision: dict | None = None,
    max_image_pixels: int = TINY_MAX_IMAGE_PIXELS,
    kind: str = "tiny",
) -> Path:
    """Write a tiny random-weight Glm4v checkpoint to `path` and return it.

    kind: "tiny" (dense glm4v) or "tiny-moe" (glm4v_moe). `text` and `vision` override the layer
    sizes (benchmarks build larger ones the same way).
    The folder loads with plain `AutoProcessor`/`AutoModelForImageTextToText.from_pretrained`.
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = make_config(text=text, vision=vision, kind=kind)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    from glmlab.generation import RECOMMENDED_SAMPLING

    model.generation_config = GenerationConfig(  # as GLM-4.6V-Flash's generation_config.json
        **RECOMMENDED_SAMPLING,
        eos_token_id=EOS_TOKEN_IDS,
        pad_token_id=PAD_TOKEN_ID,
        max_new_tokens=64,
    )
    model.save_pretrained(path)
    make_processor(max_image_pixels).save_pretrained(path)
    (path / "README.md").write_text(
        f"# glmlab {kind} checkpoint ({config.model_type})\n\nRANDOM WEIGHTS: a few small layers with "
        "GLM-4.6V-Flash's real token ids, tokenizer structure, processor classes and chat-template "
        "behaviour. Its answers are noise; it exists so loading, generation, training and serving can be "
        f"tested offline.\nBuilt by `glmlab.tiny.build(path, seed={seed}, kind={kind!r})`.\n"
    )
    return path


def make_config(text: dict | None = None, vision: dict | None = None, kind: str = "tiny"):
    """A real config (glmlab/reference: GLM-4.6V-Flash for "tiny", GLM-4.5V for "tiny-moe") with small
    layers: the same token ids, rope layout, activations, norms and routing rules, only the sizes in
    KINDS / TINY_VISION (or `text` / `vision`) differ."""
    from transformers import AutoConfig

    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {sorted(KINDS)}.")
    reference, tiny_text = KINDS[kind]
    real = reference()
    text_config = {**real.pop("text_config"), **tiny_text, **(text or {})}
    vision_config = {**real.pop("vision_config"), **TINY_VISION, **(vision or {})}
    vision_config["out_hidden_size"] = text_config["hidden_size"]
    head_dim = text_config.get("head_dim") or text_config["hidden_size"] // text_config["num_attention_heads"]
    rotary_pairs = head_dim // 4  # partial_rotary_factor 0.5 -> head_dim/2 rotary dims -> head_dim/4 pairs
    temporal = rotary_pairs // 4 or 1
    spatial = rotary_pairs - temporal
    mrope_section = [temporal, spatial // 2, spatial - spatial // 2]  # real: [8, 12, 12] for 32 pairs
    text_config["rope_parameters"] = {**text_config["rope_parameters"], "mrope_section": mrope_section}
    for key in ("architectures", "dtype"):  # written by save_pretrained from the built model
        real.pop(key)
    return AutoConfig.for_model(
        real.pop("model_type"), **real, text_config=text_config, vision_config=vision_config
    )


def make_tokenizer():
    """A byte-level BPE tokenizer with GLM's special tokens at their real ids.

    Ids below the specials are bytes (0-255) then filler word pieces (" ab", "cd", ...) that encoding
    never produces but decoding renders readably, so a random model's output looks like text.

    Encoding never merges: BPE starts every word from single characters and applies only listed
    merges, and the one merge listed (NEVER_FIRING_MERGE, there for llama.cpp, which refuses a BPE
    vocabulary without merges) needs a left symbol of two characters that only a merge could form.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(byte_alphabet))}
    specials = {**SPECIAL_TOKENS}
    free_ids = iter(range(SPECIAL_TOKENS["<|end_of_video|>"] + 1, SPECIAL_TOKENS["<|image|>"]))
    singles = {token: next(free_ids) for token in TEXT_SINGLE_TOKENS}
    reserved = set(specials.values()) | set(singles.values())
    filler = _filler_words()
    for index in range(len(vocab), VOCAB_SIZE):
        if index not in reserved:
            vocab[next(filler)] = index
    for token, index in {**specials, **singles}.items():
        vocab[token] = index
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[NEVER_FIRING_MERGE], byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in singles])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=131072,
        extra_special_tokens={"image_token": "<|image|>", "video_token": "<|video|>"},
    )


def is_tiny_tokenizer(tokenizer_json: dict) -> bool:
    """Whether a parsed tokenizer.json is make_tokenizer's (its byte alphabet, then its first filler
    pieces, at the same ids): how a GGUF export knows the pre-tokenizer of a tiny checkpoint."""
    from itertools import islice

    from tokenizers import pre_tokenizers

    vocab = (tokenizer_json.get("model") or {}).get("vocab")
    if not isinstance(vocab, dict):
        return False
    expected = [*sorted(pre_tokenizers.ByteLevel.alphabet()), *islice(_filler_words(), 64)]
    return all(vocab.get(token) == index for index, token in enumerate(expected))


def _filler_words():
    """Unique lowercase pieces, half with a leading space (ByteLevel's 'Ġ'), for unused vocab ids."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    number = 0
    while True:
        word, value = "", number
        while True:
            word = letters[value % 26] + word
            value = value // 26 - 1
            if value < 0:
                break
        yield "Ġ" + word
        yield word + "_"
        number += 1


def make_processor(max_image_pixels: int = TINY_MAX_IMAGE_PIXELS):
    """Glm46VProcessor (the real checkpoint's class) around the tiny tokenizer and the glmlab template."""
    from transformers.models.glm46v import Glm46VImageProcessor, Glm46VProcessor, Glm46VVideoProcessor

    from glmlab.prompts import pixel_budget_size

    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    size = pixel_budget_size(max_image_pixels)
    image_processor = Glm46VImageProcessor(
        size=size, image_mean=mean, image_std=std, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    video_processor = Glm46VVideoProcessor(image_mean=mean, image_std=std)
    template = resources.files("glmlab.templates").joinpath(CHAT_TEMPLATE).read_text(encoding="utf-8")
    return Glm46VProcessor(
        image_processor=image_processor,
        tokenizer=make_tokenizer(),
        video_processor=video_processor,
        chat_template=template,
    )


def ensure(home: str | Path, seed: int = 0, kind: str = "tiny") -> Path:
    """The cached tiny checkpoint of `kind` under `home`, built once (atomically, so a crash leaves no
    half folder)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {sorted(KINDS)}.")
    target = Path(home) / kind / f"v{TINY_VERSION}-seed{seed}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.warning("building the %s checkpoint (random weights) in %s", kind, target)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(staging, seed=seed, kind=kind)
        try:
            staging.rename(target)
        except OSError:  # the folder exists: another process finished first (keep its identical
            if not (target / "model.safetensors").exists():  # files), or a broken leftover: replace it
                shutil.rmtree(target)
                staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
