"""Benchmark 6, GPU: a random-weight GLM-4.6V-Flash (the real config, 10.29B params) on one GPU.

Measures, for a 1024x1024 image: TTFT, decode tokens/s at batch 1 and 8, peak memory, the same
question through the cached prefix path, and decode speed against the memory-bandwidth ceiling
(bandwidth / weight bytes: each decode step reads every weight once). `--int8` also loads the model
8-bit (bitsandbytes; the random bf16 weights are saved to disk first, which takes a few minutes).
Without a GPU it prints "no GPU: skipped" and exits 0: it is a benchmark, not a test.

Run on a GPU machine: python eval/bench/gpu.py [--int8] [--config CONFIG_JSON]
(the config defaults to GLM-4.6V-Flash's, shipped in glmlab/reference).
Then record its output in eval/bench/RESULTS.md with the date and the GPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

# Peak memory bandwidth by GPU name (vendor data sheets), bytes/s.
BANDWIDTH = {
    "H200": 4.8e12,
    "H100 PCIe": 2.0e12,
    "H100": 3.35e12,
    "A100-SXM4-80GB": 2.04e12,
    "A100": 1.56e12,
    "L40S": 0.864e12,
    "RTX 4090": 1.008e12,
    "A10": 0.6e12,
}
NEW_TOKENS = 64


def bandwidth_of(name: str) -> float | None:
    for key, value in BANDWIDTH.items():
        if key in name:
            return value
    return None


def build_vlm(config_path: Path | None, quantize: str | None):
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from glmlab import tiny
    from glmlab.model import VLM
    from glmlab.reference import GLM46V_FLASH_CONFIG, glm46v_flash_config

    values = json.loads(config_path.read_text()) if config_path else glm46v_flash_config()
    config = AutoConfig.for_model(**values)
    processor = tiny.make_processor(max_image_pixels=1024 * 1024 + 64 * 1024)
    if quantize is None:
        with torch.device("cuda"):
            model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    else:
        from transformers import BitsAndBytesConfig

        folder = Path(tempfile.mkdtemp(prefix="glm-random-"))
        with torch.device("cuda"):
            AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
        torch.cuda.empty_cache()
        model = AutoModelForImageTextToText.from_pretrained(
            folder,
            dtype=torch.bfloat16,
            device_map={"": "cuda"},
            quantization_config=BitsAndBytesConfig(
                load_in_8bit=True, llm_int8_skip_modules=["visual", "lm_head"]
            ),
        )
    model.generation_config.min_new_tokens = NEW_TOKENS  # random weights: never stop early
    model.eval()
    return VLM(
        model,
        processor,
        name=f"GLM-4.6V-Flash random ({quantize or 'bf16'})",
        source=str(config_path or GLM46V_FLASH_CONFIG),
    )


def measure(vlm, label: str) -> dict:
    import torch
    from PIL import Image

    from glmlab.images import load_image

    image = Image.effect_noise((1024, 1024), 60).convert("RGB")
    settings = {"temperature": 0, "max_new_tokens": NEW_TOKENS, "cache": False}
    vlm.ask(image, "warm up", **{**settings, "max_new_tokens": 4})
    torch.cuda.reset_peak_memory_stats()
    single = vlm.ask(image, "Describe the image in detail.", **settings)
    images = [load_image(Image.effect_noise((1024, 1024), 40 + i).convert("RGB")) for i in range(8)]
    start = time.perf_counter()
    answers = vlm.batch(
        [(img, "Describe the image in detail.") for img in images],
        batch_size=8,
        temperature=0,
        max_new_tokens=NEW_TOKENS,
    )
    batch_s = time.perf_counter() - start
    first = answers[0].timing
    batch_decode = sum(a.usage.completion_tokens - 1 for a in answers) / (first.total_s - first.ttft_s)
    session = vlm.session(image)
    session.ask("warm the prefix", temperature=0, max_new_tokens=4)
    cached = session.ask("Describe the image in detail.", temperature=0, max_new_tokens=NEW_TOKENS)
    weight_bytes = sum(p.numel() * p.element_size() for p in vlm.model.parameters())
    gpu = torch.cuda.get_device_name(0)
    bandwidth = bandwidth_of(gpu)
    ceiling = bandwidth / weight_bytes if bandwidth else None
    return {
        "run": label,
        "gpu": gpu,
        "image_tokens": single.usage.image_tokens,
        "ttft_s": single.timing.ttft_s,
        "decode_tok_s_b1": single.timing.decode_tokens_per_s,
        "decode_tok_s_b8": batch_decode,
        "batch8_total_s": batch_s,
        "cached_ttft_s": cached.timing.ttft_s,
        "cached_decode_tok_s": cached.timing.decode_tokens_per_s,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "weight_gib": weight_bytes / 2**30,
        "ceiling_tok_s": ceiling,
        "b1_vs_ceiling": single.timing.decode_tokens_per_s / ceiling if ceiling else None,
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="a Glm4v config.json (default: GLM-4.6V-Flash's)")
    parser.add_argument("--int8", action="store_true", help="also measure the 8-bit model")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no GPU: skipped")
        return
    import pandas as pd
    from common import report

    rows = [measure(build_vlm(args.config, None), "bf16")]
    if args.int8:
        torch.cuda.empty_cache()
        rows.append(measure(build_vlm(args.config, "8bit"), "int8"))
    table = pd.DataFrame(rows)
    ratios = {
        "gpu_b1_vs_bandwidth_ceiling": rows[0]["b1_vs_ceiling"] or 0.0,
        "gpu_cached_ttft_speedup": rows[0]["ttft_s"] / rows[0]["cached_ttft_s"],
    }
    report("gpu", table, ratios)


if __name__ == "__main__":
    main()
