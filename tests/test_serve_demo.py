"""The demo's export, serve and client stages, with an adapter standing in for the train stage's."""

from __future__ import annotations

from types import SimpleNamespace

from glmlab import demo


def test_demo_exports_serves_and_asks_through_the_openai_client(served_vlm, vision_adapter, tmp_path):
    lines: list[str] = []
    ctx = demo.DemoContext(
        model="tiny",
        work_dir=tmp_path,
        echo=lines.append,
        vlm=served_vlm,
        results={"train": SimpleNamespace(adapter_dir=vision_adapter)},  # what the train stage leaves
    )
    for name in ("export", "serve", "client"):
        next(stage for stage in demo.STAGES if stage.name == name).run(ctx)
    text = "\n".join(lines)
    assert (
        "rank 4, 12 language-model modules, 9 vision-block/merger modules, 2 vision modules dropped" in text
    )
    assert "--reasoning-parser glm45" in text and "--enable-tower-connector-lora --lora-modules demo=" in text
    assert "openai client, model 'tiny'" in text and "openai client, model 'demo'" in text
    assert "glmlab.Client:" in text and "measured at the client" in text
    assert "demo" not in served_vlm.adapters  # the client stage stops the server and unloads the adapter


def test_demo_stages_without_a_trained_adapter_serve_the_base_model(served_vlm, tmp_path):
    lines: list[str] = []
    ctx = demo.DemoContext(model="tiny", work_dir=tmp_path, echo=lines.append, vlm=served_vlm)
    for name in ("export", "serve", "client"):
        next(stage for stage in demo.STAGES if stage.name == name).run(ctx)
    text = "\n".join(lines)
    assert (
        "nothing to export" in text and "openai client, model 'tiny'" in text and "model 'demo'" not in text
    )
