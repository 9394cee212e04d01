"""glmlab.export: vLLM-ready adapters (checks, manifest), merged checkpoints, CLI front."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors import safe_open
from support import TEXT_TARGETS, make_adapter, scene

import glmlab
from glmlab.errors import ConfigError
from glmlab.export import MANIFEST, base_model_of, export_merged, export_vllm, inspect_adapter, max_lora_rank

GREEDY = {"temperature": 0, "max_new_tokens": 16}
TEXT_MODULES_PER_LAYER = 6


def test_inspect_reads_rank_modules_and_base_model(adapters, tiny_path):
    info = inspect_adapter(adapters["seeing"])
    assert info.rank == 4 and info.base_model == str(tiny_path)
    assert len(info.modules) == 2 * TEXT_MODULES_PER_LAYER + 2
    assert "model.language_model.layers.1.mlp.gate_up_proj" in info.modules
    assert "model.visual.blocks.0.attn.qkv" in info.modules


def test_glmlab_json_names_the_base_model_first(adapters, tmp_path):
    copy = shutil.copytree(adapters["alpha"], tmp_path / "alpha")
    (copy / "glmlab.json").write_text(json.dumps({"base_model": "zai-org/GLM-4.6V-Flash"}))
    assert base_model_of(copy) == "zai-org/GLM-4.6V-Flash"


@pytest.mark.parametrize(("rank", "expected"), [(1, 1), (4, 8), (8, 8), (17, 32), (300, 320), (512, 512)])
def test_max_lora_rank_is_the_smallest_allowed_rank_that_fits(rank, expected):
    assert max_lora_rank(rank) == expected


def test_ranks_over_512_are_refused():
    with pytest.raises(ConfigError, match="LoRA rank 600: vLLM serves ranks up to 512"):
        max_lora_rank(600)


def test_vllm_export_drops_the_vision_qkv_vllm_ignores_with_a_warning_naming_it(adapters, tmp_path):
    with pytest.warns(
        UserWarning,
        match=r"dropping vision-tower modules vLLM would ignore \(no LoRA layer for them\): "
        r"model\.visual\.blocks\.0\.attn\.qkv, model\.visual\.blocks\.1\.attn\.qkv\.",
    ):
        exported = export_vllm(adapters["seeing"], tmp_path / "seeing-vllm", name="seeing")
    assert exported.dropped_modules == QKV
    with safe_open(str(exported.path / "adapter_model.safetensors"), framework="pt") as weights:
        assert not [key for key in weights.keys() if "visual" in key]
    assert inspect_adapter(exported.path).modules == exported.modules
    manifest = json.loads((exported.path / MANIFEST).read_text())
    assert manifest["format"] == "vllm" and manifest["rank"] == 4 and manifest["max_lora_rank"] == 8
    assert manifest["dropped_modules"] == exported.dropped_modules and len(manifest["modules"]) == 12
    assert manifest["tower_connector_lora"] is False and manifest["fused_modules"] == {}
    assert "--enable-tower-connector-lora" not in manifest["vllm_serve"]
    assert manifest["vllm_serve"].endswith(
        f"--max-lora-rank 8 --max-loras 1 --lora-modules seeing={exported.path} --max-model-len auto "
        """--limit-mm-per-prompt '{"image": 32, "video": 1}' """
        """--media-io-kwargs '{"video": {"num_frames": 16, "fps": 2.0}}'"""
    )


QKV = ["model.visual.blocks.0.attn.qkv", "model.visual.blocks.1.attn.qkv"]
TOWER = ("attn.proj", "mlp.down_proj", "mlp.gate_up_proj")
# vLLM's LoRA layers in Glm4v's vision blocks and merger, as the export names them (sorted)
SERVED_VISION = [
    *(f"model.visual.blocks.{block}.{name}" for block in (0, 1) for name in TOWER),
    "model.visual.merger.down_proj",
    "model.visual.merger.gate_up_proj",
    "model.visual.merger.proj",
]
FUSED = {
    **{
        f"model.visual.blocks.{block}.mlp.gate_up_proj": [
            f"model.visual.blocks.{block}.mlp.gate_proj",
            f"model.visual.blocks.{block}.mlp.up_proj",
        ]
        for block in (0, 1)
    },
    "model.visual.merger.gate_up_proj": ["model.visual.merger.gate_proj", "model.visual.merger.up_proj"],
}


def test_vllm_export_keeps_the_vision_modules_vllm_serves_with_tower_lora(vision_adapter, tmp_path):
    with pytest.warns(UserWarning, match=r"dropping vision-tower modules vLLM would ignore"):
        exported = export_vllm(vision_adapter, tmp_path / "vision-vllm", name="vision")
    assert [module for module in exported.modules if ".visual." in module] == SERVED_VISION
    assert len(exported.modules) == 2 * TEXT_MODULES_PER_LAYER + len(SERVED_VISION)
    assert exported.dropped_modules == QKV and exported.fused_modules == FUSED
    assert exported.tower_connector_lora and exported.rank == 4
    assert exported.max_lora_rank == 8  # a fused gate_up_proj holds both halves' ranks: 4 + 4
    assert inspect_adapter(exported.path).modules == exported.modules
    manifest = json.loads((exported.path / MANIFEST).read_text())
    assert manifest["tower_connector_lora"] is True and manifest["fused_modules"] == FUSED
    assert manifest["modules"] == exported.modules and manifest["dropped_modules"] == QKV
    assert (
        f"--enable-lora --max-lora-rank 8 --max-loras 1 --enable-tower-connector-lora "
        f"--lora-modules vision={exported.path} " in manifest["vllm_serve"]
    )
    config = json.loads((exported.path / "adapter_config.json").read_text())
    assert config["target_modules"].endswith(
        r"|.*visual\.(blocks\.\d+\.attn\.proj|blocks\.\d+\.mlp\.down_proj|blocks\.\d+\.mlp\.gate_up_proj"
        r"|merger\.down_proj|merger\.gate_up_proj|merger\.proj)$)"
    )


def test_the_exported_gate_up_lora_adds_what_the_gate_and_up_loras_added(vision_adapter, tmp_path):
    from safetensors.torch import load_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the qkv drop
        exported = export_vllm(vision_adapter, tmp_path / "vision-vllm")
    source = load_file(str(vision_adapter / "adapter_model.safetensors"))
    written = load_file(str(exported.path / "adapter_model.safetensors"))

    def delta(weights, module):  # one scale for every module here (alpha 8 / r 4): left out
        return (
            weights[f"base_model.model.{module}.lora_B.weight"]
            @ weights[f"base_model.model.{module}.lora_A.weight"]
        )

    for fused, (gate, up) in FUSED.items():
        assert written[f"base_model.model.{fused}.lora_A.weight"].shape[0] == 8
        torch.testing.assert_close(delta(written, fused), torch.cat([delta(source, gate), delta(source, up)]))
    for module in exported.modules:
        if module not in FUSED:  # every other module is copied as it was
            assert torch.equal(delta(written, module), delta(source, module))


def test_glmlab_names_a_vllm_export_with_fused_vision_modules_when_asked_to_load_it(
    vision_adapter, vlm, tmp_path
):
    from glmlab.errors import AdapterError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the qkv drop
        exported = export_vllm(vision_adapter, tmp_path / "vision-vllm")
    with pytest.raises(AdapterError, match=r"It is a vLLM export \(vision gate_proj and up_proj fused"):
        vlm.load_adapter(exported.path, "fused")
    assert "fused" not in vlm.adapters


def test_fusing_gives_each_half_its_own_peft_scale():
    from glmlab.export.vllm import fuse_gate_up

    generator = torch.Generator().manual_seed(0)
    gate_a, gate_b = torch.randn(4, 6, generator=generator), torch.randn(5, 4, generator=generator)
    up_a, up_b = torch.randn(2, 6, generator=generator), torch.randn(5, 2, generator=generator)
    merger = "model.visual.merger."
    tensors = {
        f"base_model.model.{merger}gate_proj.lora_A.weight": gate_a,
        f"base_model.model.{merger}gate_proj.lora_B.weight": gate_b,
        f"base_model.model.{merger}up_proj.lora_A.weight": up_a,
        f"base_model.model.{merger}up_proj.lora_B.weight": up_b,
    }
    config = {"r": 4, "lora_alpha": 8, "rank_pattern": {"up_proj": 2}, "alpha_pattern": {"gate_up_proj": 3}}
    halves = [f"{merger}gate_proj", f"{merger}up_proj"]
    lora_a, lora_b = fuse_gate_up(tensors, halves, config)[f"{merger}gate_up_proj"]
    # PEFT scales gate by 8/4 and up by 8/2 (rank_pattern); vLLM scales the fused LoRA by 3/4 (alpha_pattern)
    assert lora_a.shape == (6, 6) and lora_b.shape == (10, 6)
    torch.testing.assert_close(3 / 4 * lora_b @ lora_a, torch.cat([2 * gate_b @ gate_a, 4 * up_b @ up_a]))
    rslora = fuse_gate_up(tensors, halves, {**config, "use_rslora": True})[f"{merger}gate_up_proj"]
    torch.testing.assert_close(  # alpha / sqrt(r): gate 8/2, up 8/sqrt(2), fused 3/2
        3 / 2 * rslora[1] @ rslora[0], torch.cat([4 * gate_b @ gate_a, 8 / 2**0.5 * up_b @ up_a])
    )
    only_gate = {key: value for key, value in tensors.items() if "gate_proj" in key}
    lora_a, lora_b = fuse_gate_up(only_gate, halves[:1], config)[f"{merger}gate_up_proj"]
    assert lora_a.shape == (4, 6) and lora_b.shape == (10, 4)  # the up half adds nothing
    torch.testing.assert_close(3 / 4 * lora_b @ lora_a, torch.cat([2 * gate_b @ gate_a, torch.zeros(5, 6)]))


def test_a_merger_adapter_exports_whole_even_with_strict(tiny_path, tmp_path):
    from glmlab.lora.recipe import VISION_TARGETS

    merger = make_adapter(
        tiny_path,
        tmp_path / "merger",
        seed=7,
        rank=8,
        target_modules=f"({TEXT_TARGETS}|{VISION_TARGETS['merger']})",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exported = export_vllm(merger, tmp_path / "merger-vllm", strict=True)
    assert [module for module in exported.modules if ".visual." in module] == SERVED_VISION[-3:]
    assert exported.dropped_modules == [] and exported.tower_connector_lora
    assert exported.max_lora_rank == 16  # the merger's gate_up_proj: 8 + 8


def test_a_gate_up_pair_above_vllm_s_largest_rank_is_refused(tiny_path, tmp_path):
    wide = make_adapter(
        tiny_path, tmp_path / "wide", seed=8, rank=300, target_modules=r".*visual\.merger\.(gate|up)_proj"
    )
    with pytest.raises(
        ConfigError, match=r"one gate_up_proj LoRA of rank 600 \(the two ranks together\), above the 512"
    ):
        export_vllm(wide, tmp_path / "wide-vllm")
    assert not (tmp_path / "wide-vllm").exists()


def test_vllm_export_keeps_a_text_only_adapter_whole(adapters, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exported = export_vllm(adapters["beta"], tmp_path / "beta-vllm")
    assert exported.dropped_modules == [] and exported.modules == inspect_adapter(adapters["beta"]).modules
    config = json.loads((exported.path / "adapter_config.json").read_text())
    assert config["target_modules"].endswith(r"\.(down_proj|gate_up_proj|k_proj|o_proj|q_proj|v_proj)$")
    assert exported.max_lora_rank == 8


def test_strict_vllm_export_refuses_the_vision_modules_vllm_would_ignore(vision_adapter, tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"adapts vision-tower modules that vLLM would ignore \(it has no LoRA layer for them in "
        r"Glm4v\): model\.visual\.blocks\.0\.attn\.qkv, model\.visual\.blocks\.1\.attn\.qkv\. Retrain without",
    ):
        export_vllm(vision_adapter, tmp_path / "out", strict=True)
    assert not (tmp_path / "out").exists()


def test_vllm_export_refuses_modules_outside_the_language_model(tiny_path, tmp_path):
    head = make_adapter(
        tiny_path,
        tmp_path / "head",
        seed=5,
        target_modules=r".*(lm_head|language_model\.layers\.0\.self_attn\.q_proj)",
    )
    with pytest.raises(ConfigError, match="adapts modules vLLM has no LoRA slot for: lm_head"):
        export_vllm(head, tmp_path / "out")
    beyond = make_adapter(
        tiny_path, tmp_path / "beyond", seed=5, target_modules=r".*visual\.blocks\.1\.attn\.proj"
    )
    with pytest.raises(ConfigError, match=r"no LoRA slot for: model\.visual\.blocks\.1\.attn\.proj\."):
        export_vllm(beyond, tmp_path / "out", model=str(_one_block(tiny_path, tmp_path)))


def _one_block(tiny_path, tmp_path):
    """The tiny checkpoint's config with one vision block: block 1 is out of its range."""
    base = tmp_path / "one-block"
    base.mkdir()
    config = json.loads((tiny_path / "config.json").read_text())
    config["vision_config"]["depth"] = 1
    (base / "config.json").write_text(json.dumps(config))
    return base


def test_export_refuses_a_non_empty_folder_unless_overwrite(adapters, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        export_vllm(adapters["alpha"], tmp_path / "out")
    (tmp_path / "out" / "keep.txt").unlink()  # an empty folder is taken
    assert export_vllm(adapters["alpha"], tmp_path / "out").path == tmp_path / "out"
    (tmp_path / "out" / "stale.txt").write_text("from an earlier export")
    assert export_vllm(adapters["beta"], tmp_path / "out", overwrite=True).path == tmp_path / "out"
    assert not (tmp_path / "out" / "stale.txt").exists()  # an earlier export is replaced whole
    assert inspect_adapter(tmp_path / "out").modules == inspect_adapter(adapters["beta"]).modules
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # no staging folder left


def test_overwrite_refuses_a_folder_that_holds_no_glmlab_export(adapters, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"is not empty and holds no glmlab export \(glmlab_export.json\)"):
        export_vllm(adapters["alpha"], tmp_path / "work", name="alpha", overwrite=True)
    assert (tmp_path / "work" / "notes.txt").read_text() == "mine"
    monkeypatch.chdir(tmp_path / "work")
    for out in (".", str(tmp_path)):
        with pytest.raises(ConfigError, match="is the current folder"):
            export_merged(adapters["alpha"], out, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file; --out takes a folder"):
        export_vllm(adapters["alpha"], tmp_path / "file", overwrite=True)


def test_a_failed_merge_leaves_the_earlier_export_as_it_was(adapters, tiny_path, tmp_path):
    from glmlab.errors import ModelLoadError

    first = export_vllm(adapters["alpha"], tmp_path / "exports" / "out")
    before = {path.name: path.read_bytes() for path in first.path.iterdir()}
    base = shutil.copytree(tiny_path, tmp_path / "base-without-weights")
    for weights in base.glob("*.safetensors"):
        weights.unlink()  # its config reads, so the merge starts; loading the weights fails
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        export_merged(adapters["alpha"], first.path, model=str(base), overwrite=True)
    assert {path.name: path.read_bytes() for path in first.path.iterdir()} == before
    assert sorted(path.name for path in first.path.parent.iterdir()) == ["out"]  # staging removed


@pytest.mark.parametrize("exporter", [export_vllm, export_merged])
def test_overwrite_never_deletes_the_adapter_being_exported(adapters, tmp_path, exporter):
    source = tmp_path / "runs" / "alpha"
    shutil.copytree(adapters["alpha"], source)
    for out in (source, source.parent):
        with pytest.raises(ConfigError, match="holds the adapter being exported"):
            exporter(source, out, overwrite=True)
    assert (source / "adapter_model.safetensors").is_file()


@pytest.fixture(scope="module")
def vlm(served_vlm, adapters):
    """The module's tiny model with the source adapters alpha and beta loaded (base stays active)."""
    for name in ("alpha", "beta"):
        served_vlm.load_adapter(adapters[name], name, activate=False)
    return served_vlm


def test_the_vllm_export_answers_like_its_source(adapters, vlm, tmp_path):
    exported = export_vllm(adapters["beta"], tmp_path / "beta-vllm")
    vlm.load_adapter(exported.path, "beta-exported", activate=False)
    try:
        assert (
            vlm.ask(scene(), "Q", adapter="beta-exported", **GREEDY).raw
            == vlm.ask(scene(), "Q", adapter="beta", **GREEDY).raw
        )
    finally:
        vlm.unload_adapter("beta-exported")


@pytest.fixture(scope="module")
def merged(adapters, tmp_path_factory):
    return export_merged(adapters["alpha"], tmp_path_factory.mktemp("merged") / "alpha-merged")


def test_merged_checkpoint_answers_exactly_like_base_plus_adapter(merged, vlm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        merged_vlm = glmlab.load(str(merged))
    assert not merged_vlm.adapters
    for image, question in ((scene(), "What colour?"), (scene(colour="blue"), "Describe.")):
        expected = vlm.ask(image, question, adapter="alpha", **GREEDY).raw
        assert merged_vlm.ask(image, question, **GREEDY).raw == expected
        assert expected != vlm.ask(image, question, adapter=None, **GREEDY).raw


# bf16 cannot make merged = base + adapter exact: the merge rounds W + B·A to bf16 once, while the live
# adapter adds the separately rounded B·A·x to W·x. On the tiny model the last-position logits then differ
# by up to 0.014 (largest logit ~0.8), and greedy decoding may part where two logits are that close.
# The bf16 rule: logits within BF16_LOGIT_ATOL, and the same greedy token wherever the reference's top-2
# margin exceeds twice that (a closer pair is a tie at bf16 precision). float32 stays exact (above).
BF16_LOGIT_ATOL = 0.03


def test_merged_checkpoint_in_bf16_matches_base_plus_adapter_within_bf16_precision(
    merged, adapters, vlm_bf16
):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        merged_bf16 = glmlab.load(str(merged), dtype="bfloat16", device="cpu")
    vlm_bf16.load_adapter(adapters["alpha"], "alpha-bf16", activate=False)
    try:
        prompt = vlm_bf16.prepare(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": scene()},
                        {"type": "text", "text": "What colour?"},
                    ],
                }
            ]
        )
        with torch.no_grad():
            with vlm_bf16.using_adapter("alpha-bf16"):
                reference = vlm_bf16.model(**prompt.features).logits[0, -1].float()
            base = vlm_bf16.model(**prompt.features).logits[0, -1].float()
            got = merged_bf16.model(**prompt.features).logits[0, -1].float()
    finally:
        vlm_bf16.unload_adapter("alpha-bf16")
    assert merged_bf16.model.dtype == torch.bfloat16
    torch.testing.assert_close(got, reference, rtol=0, atol=BF16_LOGIT_ATOL)
    assert (base - reference).abs().max() > BF16_LOGIT_ATOL  # the adapter's effect is above the tolerance
    first, second = reference.topk(2).values
    assert first - second > 2 * BF16_LOGIT_ATOL  # this prompt's first token is no bf16 tie, so:
    assert int(got.argmax()) == int(reference.argmax())


def test_merged_checkpoint_carries_processor_tokenizer_and_chat_template(merged):
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        MANIFEST,
    ):
        assert (merged / name).exists(), name
    manifest = json.loads((merged / MANIFEST).read_text())
    assert manifest["format"] == "merged" and manifest["dtype"] == "float32"


def test_merging_into_a_quantized_base_is_refused(adapters, tiny_path, tmp_path):
    base = shutil.copytree(tiny_path, tmp_path / "quantized-base")
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="a fp8 checkpoint; merging into quantized weights"):
        export_merged(adapters["alpha"], tmp_path / "out", model=str(base))


def test_cli_export_for_vllm_prints_the_serve_line(adapters, tmp_path):
    from typer.testing import CliRunner

    from glmlab.cli import app

    out = tmp_path / "cli-vllm"
    result = CliRunner().invoke(
        app, ["export", str(adapters["seeing"]), "--format", "vllm", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "dropped 2 vision-tower modules" in result.output and "vllm serve " in result.output
    assert "--enable-tower-connector-lora" not in result.output
    assert (out / MANIFEST).exists()
    refused = CliRunner().invoke(
        app,
        [
            "export",
            str(adapters["seeing"]),
            "--format",
            "vllm",
            "--out",
            str(tmp_path / "strict"),
            "--strict",
        ],
    )
    assert refused.exit_code == 2 and "ConfigError" in refused.output
    assert (
        CliRunner().invoke(app, ["export", str(adapters["alpha"])]).exit_code == 2
    )  # neither --format nor --to


def test_a_bad_adapter_name_is_refused_before_anything_is_written(adapters, tmp_path):
    with pytest.raises(ConfigError, match="adapter name 'my adapter'"):
        export_vllm(adapters["alpha"], tmp_path / "my adapter")
    assert not (tmp_path / "my adapter").exists()


# ---- export_for_serving: the form vLLM can serve ---------------------------------------------------


def test_export_for_serving_writes_the_vllm_adapter_when_vllm_accepts_it(adapters, vision_adapter, tmp_path):
    from glmlab.export import export_for_serving

    exported = export_for_serving(adapters["beta"], tmp_path / "beta")
    assert exported.format == "vllm" and exported.vllm.rank == 8
    assert "LoRA on 12 language-model modules, rank 8" in exported.reason
    assert "--lora-modules beta=" in exported.vllm_serve
    assert (tmp_path / "beta" / "adapter_model.safetensors").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the qkv drop
        vision = export_for_serving(vision_adapter, tmp_path / "vision")
    assert vision.format == "vllm" and vision.vllm.tower_connector_lora
    assert vision.reason.endswith(
        "LoRA on 12 language-model modules, 12 vision-block and merger modules (served with "
        "--enable-tower-connector-lora), 2 vision modules vLLM ignores dropped, rank 4"
    )


def test_export_for_serving_merges_what_vllm_refuses_and_the_merge_answers_like_the_adapter(
    tiny_path, tmp_path
):
    from glmlab.export import export_for_serving

    head = make_adapter(
        tiny_path, tmp_path / "head", seed=5, modules_to_save=["lm_head"]
    )  # as lora/shapes.yaml
    exported = export_for_serving(head, tmp_path / "head-served")
    assert exported.format == "merged" and exported.vllm is None
    assert "trains whole modules ['lm_head'] (modules_to_save), which vLLM does not load" in exported.reason
    assert exported.vllm_serve.startswith(f"vllm serve {(tmp_path / 'head-served').resolve()} ")
    assert "--lora-modules" not in exported.vllm_serve
    merged = glmlab.load(str(exported.path)).ask(scene(), "Colour?", **GREEDY)
    adapted = glmlab.load(str(tiny_path), adapter=str(head)).ask(scene(), "Colour?", **GREEDY)
    assert merged.text == adapted.text


def test_cli_export_format_auto_says_which_format_and_why(adapters, tmp_path):
    from typer.testing import CliRunner

    from glmlab.cli import app

    result = CliRunner().invoke(
        app, ["export", str(adapters["alpha"]), "--format", "auto", "--out", str(tmp_path / "alpha")]
    )
    assert result.exit_code == 0, result.output
    assert "format vllm: " in result.output and "serve it with:\n  vllm serve " in result.output
