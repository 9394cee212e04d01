"""Named LoRA adapters on a loaded VLM: load several, switch per call, unload back to the base."""

import pytest
from support import scene

import glmlab
from glmlab.errors import AdapterError

GREEDY = {"temperature": 0, "max_new_tokens": 8}


@pytest.fixture
def fresh_vlm(tiny_path):
    return glmlab.load(tiny_path)


def test_adapters_change_answers_and_switch_per_call(fresh_vlm, adapters):
    image = scene()
    base = fresh_vlm.ask(image, "Q", **GREEDY).raw
    fresh_vlm.load_adapter(adapters["alpha"])
    fresh_vlm.load_adapter(adapters["beta"], activate=False)
    assert fresh_vlm.active_adapter == "alpha" and list(fresh_vlm.adapters) == ["alpha", "beta"]
    alpha = fresh_vlm.ask(image, "Q", **GREEDY)
    beta = fresh_vlm.ask(image, "Q", adapter="beta", **GREEDY)
    assert len({base, alpha.raw, beta.raw}) == 3
    assert (alpha.model, beta.model) == ("alpha", "beta")
    assert fresh_vlm.ask(image, "Q", adapter=None, **GREEDY).raw == base
    assert fresh_vlm.active_adapter == "alpha"  # a per-call adapter does not change the active one
    assert fresh_vlm.ask(image, "Q", **GREEDY).raw == alpha.raw


def test_unloading_every_adapter_restores_the_base_model(fresh_vlm, adapters):
    base = fresh_vlm.ask(None, "Hi", **GREEDY).raw
    fresh_vlm.load_adapter(adapters["alpha"], name="a")
    fresh_vlm.load_adapter(adapters["beta"], name="b")
    fresh_vlm.unload_adapter("b")
    assert fresh_vlm.active_adapter is None and fresh_vlm.ask(None, "Hi", **GREEDY).raw == base
    fresh_vlm.unload_adapter("a")
    assert fresh_vlm.adapters == {} and fresh_vlm.ask(None, "Hi", **GREEDY).raw == base
    assert type(fresh_vlm.model).__name__ == "Glm4vForConditionalGeneration"
    assert not any("lora" in name for name, _ in fresh_vlm.model.named_modules())


def test_load_option_applies_the_adapter(tiny_path, adapters, fresh_vlm):
    fresh_vlm.load_adapter(adapters["alpha"])
    expected = fresh_vlm.ask(scene(), "Q", **GREEDY).raw
    loaded = glmlab.load(tiny_path, adapter=adapters["alpha"])
    assert loaded.active_adapter == "alpha" and loaded.ask(scene(), "Q", **GREEDY).raw == expected


def test_duplicate_name_is_refused(fresh_vlm, adapters):
    fresh_vlm.load_adapter(adapters["alpha"])
    with pytest.raises(AdapterError, match="adapter name 'alpha' is already loaded"):
        fresh_vlm.load_adapter(adapters["beta"], name="alpha")


def test_prefix_cache_never_mixes_adapters(fresh_vlm, adapters):
    image = scene(140, 140, "blue")
    base = fresh_vlm.ask(image, "Q", **GREEDY).raw
    fresh_vlm.load_adapter(adapters["alpha"])
    assert fresh_vlm.ask(image, "Q", **GREEDY).raw == fresh_vlm.ask(image, "Q", cache=False, **GREEDY).raw
    assert fresh_vlm.ask(image, "Q", adapter=None, **GREEDY).raw == base
