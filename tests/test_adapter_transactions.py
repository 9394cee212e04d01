"""Loading an adapter is a transaction: a bad adapter is refused with the reason (an AdapterError, a 400
on the server) and the model, its adapters, their configs and the base weights stay exactly as they were.

Every bad adapter is a copy of the shared gamma adapter with one thing broken, and with lora_alpha 99
(gamma's is 8), so a failed replacement that leaked its config into the kept adapter would show.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file
from support import API_KEY, make_adapter

import glmlab
from glmlab.errors import AdapterError

GREEDY = {"temperature": 0, "max_new_tokens": 3}
PREFIX = "base_model.model.model.language_model.layers."


# ---- bad adapters --------------------------------------------------------------------------------


def config(**changes: object) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return edit


def weights(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "adapter_model.safetensors"
        save_file(change(load_file(path)), path)

    return edit


def file_bytes(change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "adapter_model.safetensors"
        path.write_bytes(change(path.read_bytes()))

    return edit


def nan_data(data: bytes) -> bytes:
    """The same header, every weight byte 0xFF (NaN in float32)."""
    start = 8 + int.from_bytes(data[:8], "little")
    return data[:start] + b"\xff" * (len(data) - start)


def rename(old: str, new: str) -> Callable[[dict], dict]:
    return lambda tensors: {key.replace(old, new): value for key, value in tensors.items()}


def drop_one_lora_b(tensors: dict) -> dict:
    dropped = next(key for key in sorted(tensors) if key.endswith("lora_B.weight"))
    return {key: value for key, value in tensors.items() if key != dropped}


def add_conv_lora(tensors: dict) -> dict:
    return {**tensors, "base_model.model.model.visual.downsample.lora_A.weight": torch.zeros(4, 32)}


def both(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        for one in edits:
            one(folder)

    return edit


def rank_520(folder: Path, tiny_path: Path) -> None:
    shutil.rmtree(folder)
    make_adapter(tiny_path, folder, seed=5, rank=520)


DOWN_A = f"{PREFIX}0.mlp.down_proj.lora_A.weight"
TEXT_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate_up|down)_proj)"
# kind -> (what breaks it, the error it must give)
BAD: dict[str, tuple[Callable[..., None], str]] = {
    "truncated": (file_bytes(lambda data: data[: len(data) // 2]), r"unreadable adapter files \("),
    "not-safetensors": (
        file_bytes(lambda data: b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"),
        r"unreadable",
    ),
    "nan-weights": (file_bytes(nan_data), r": the weights of model\.\S+ hold NaN or infinite values"),
    "wrong-shapes": (
        weights(lambda tensors: {key: torch.zeros(3, 3) for key in tensors}),
        rf"tensor '{DOWN_A}' has shape \[3, 3\]; model\.language_model\.layers\.0\.mlp\.down_proj with this "
        r"adapter's rank needs \[4, 128\]",
    ),
    "rank-mismatch": (config(r=8), rf"tensor '{DOWN_A}' has shape \[4, 128\]; .* needs \[8, 128\]"),
    "renamed-factor": (
        weights(rename("lora_A", "lora_X")),
        r"neither a LoRA factor \(<module>\.lora_A\.weight, <module>\.lora_B\.weight\)",
    ),
    "unknown-module": (
        weights(rename("layers.0.", "layers.9.")),
        r"the base model has no module 'model\.language_model\.layers\.9\.mlp\.down_proj'",
    ),
    "not-linear": (
        weights(add_conv_lora),
        r"model\.visual\.downsample is a Conv2d; glmlab loads LoRA on linear layers only",
    ),
    "saved-module-shape": (
        both(
            config(modules_to_save=["language_model.norm"]),
            weights(
                lambda tensors: {
                    **tensors,
                    "base_model.model.model.language_model.norm.weight": torch.ones(5),
                }
            ),
        ),
        r"has shape \[5\]; model\.language_model\.norm\.weight is \[64\]",
    ),
    "missing-partner": (weights(drop_one_lora_b), r"has a lora_A tensor but no lora_B"),
    "integer-weights": (
        weights(lambda tensors: {key: value.to(torch.int64) for key, value in tensors.items()}),
        r"has dtype I64; LoRA weights are F16/BF16/F32/F64",
    ),
    **{
        f"init-{init}": (
            config(init_lora_weights=init),
            rf"init_lora_weights is '{init}'; glmlab loads adapters with plain initialisation only",
        )
        for init in ("pissa", "pissa_niter_4", "olora", "corda", "loftq", "eva")
    },
    "rank-over-cap": (
        rank_520,
        r"rank 520 is above the largest glmlab loads \(512\); retrain with a smaller r",
    ),
    "layer-replication": (
        config(layer_replication=[[0, 2], [0, 2]]),
        r"layer_replication is set \(the adapter duplicates decoder layers\); glmlab loads plain LoRA",
    ),
    "dora": (config(use_dora=True), r"use_dora is set \(the adapter is a DoRA adapter"),
    "trains-biases": (config(bias="all"), r"bias is 'all'; the adapter carries the base model's own biases"),
    "not-lora": (config(peft_type="IA3"), r"peft_type is 'IA3'; glmlab loads LoRA adapters only"),
    "bad-rank": (config(r="four"), r"r is 'four', not a positive integer"),
    "nan-alpha": (config(alpha_pattern={"q_proj": float("nan")}), r"alpha_pattern\['q_proj'\] is nan"),
    # these two pass every check made before loading; peft's own load finds the mismatch, then rollback
    "unselected-weights": (
        config(target_modules=r".*language_model\.layers\.\d+\.self_attn\.q_proj"),
        r"the file has weights for 10 module\(s\) target_modules does not select",
    ),
    "unweighted-targets": (
        config(target_modules=rf"({TEXT_TARGETS}|.*visual\.blocks\.\d+\.attn\.qkv)"),
        r"target_modules selects \d+ module\(s\) the file has no weights for \(first: model\.visual\.blocks\.0",
    ),
}


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory, adapters, tiny_path) -> Path:
    """One folder per kind of bad adapter."""
    root = tmp_path_factory.mktemp("bad-adapters")
    for kind, (breaks, _) in BAD.items():
        folder = root / kind
        shutil.copytree(adapters["gamma"], folder)
        if breaks is rank_520:
            breaks(folder, tiny_path)
        else:
            breaks(folder)
        if kind != "not-lora":
            config(lora_alpha=99)(folder)
    return root


# ---- what must not change ------------------------------------------------------------------------


def base_digest(vlm) -> str:
    """A checksum of every base weight, whatever peft wrappers hold them (LoRA's own weights excluded)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(vlm.model.state_dict().items()):
        if "lora_" in key or ".modules_to_save." in key:
            continue
        digest.update(key.replace(".base_layer", "").encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def adapter_configs(vlm) -> dict[str, tuple]:
    """Each loaded adapter's rank, alpha and the scaling every LoRA layer applies for it."""
    from peft.tuners.lora import LoraLayer

    layers = [module for module in vlm.model.modules() if isinstance(module, LoraLayer)]
    configs = {}
    for name, slot in vlm._adapters.slots.items():
        config = vlm._adapters.peft.peft_config[slot]
        scalings = sorted(layer.scaling[slot] for layer in layers if slot in layer.scaling)
        configs[name] = (config.r, config.lora_alpha, scalings)
    return configs


def state(vlm) -> dict:
    """Everything a failed load must leave as it was."""
    return {
        "adapters": dict(vlm.adapters),
        "active": vlm.active_adapter,
        "peft adapters": None if vlm._adapters.peft is None else sorted(vlm._adapters.peft.peft_config),
        "configs": adapter_configs(vlm) if vlm._adapters.peft is not None else {},
        "modules": [(name, type(module).__name__) for name, module in vlm.model.named_modules()],
        "base weights": base_digest(vlm),
        "answers": {
            adapter: vlm.ask(None, "Hi", adapter=adapter, **GREEDY).raw for adapter in [None, *vlm.adapters]
        },
    }


def load_tiny(tiny_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return glmlab.load(tiny_path)


@pytest.fixture(scope="module")
def busy(tiny_path, adapters):
    """A model with alpha (active) and beta loaded, and its state before any bad load."""
    vlm = load_tiny(tiny_path)
    vlm.load_adapter(adapters["alpha"])
    vlm.load_adapter(adapters["beta"], activate=False)
    return vlm, state(vlm)


@pytest.fixture(scope="module")
def empty(tiny_path):
    """A model with no adapter, and its state before any bad load."""
    vlm = load_tiny(tiny_path)
    return vlm, state(vlm)


# ---- the model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_adapter_beside_others_or_replacing_one_changes_nothing(busy, bad_root, kind):
    vlm, before = busy
    error = BAD[kind][1]
    with pytest.raises(AdapterError, match=error):
        vlm.load_adapter(bad_root / kind, "new")
    with pytest.raises(AdapterError, match=error):
        vlm.load_adapter(bad_root / kind, "alpha", replace=True)
    assert state(vlm) == before  # alpha kept its own lora_alpha (8, scaling 2.0), not the bad one's 99
    assert before["configs"]["alpha"] == (4, 8, [2.0] * 12)


# the kinds found only once peft has loaded the adapter (undone by rollback), and two found before
ROLLED_BACK = ["nan-weights", "unselected-weights", "unweighted-targets"]


@pytest.mark.parametrize("kind", [*ROLLED_BACK, "truncated", "init-pissa"])
def test_a_bad_first_adapter_leaves_the_plain_model(empty, bad_root, kind):
    vlm, before = empty
    with pytest.raises(AdapterError, match=BAD[kind][1]):
        vlm.load_adapter(bad_root / kind)
    assert state(vlm) == before
    assert vlm._adapters.peft is None and not hasattr(vlm.model, "peft_config")


@pytest.mark.slow
def test_a_good_replacement_swaps_in_and_leaves_nothing_behind(tiny_path, adapters):
    vlm = load_tiny(tiny_path)
    pristine = state(vlm)
    vlm.load_adapter(adapters["gamma"])
    gamma = vlm.ask(None, "Hi", **GREEDY).raw
    vlm.unload_adapter("gamma")
    vlm.load_adapter(adapters["alpha"], "x")
    alpha = vlm.ask(None, "Hi", **GREEDY).raw
    assert alpha != gamma
    vlm.load_adapter(adapters["gamma"], "x", replace=True)
    assert vlm.active_adapter == "x" and vlm.ask(None, "Hi", **GREEDY).raw == gamma
    assert len(vlm._adapters.peft.peft_config) == 1 and adapter_configs(vlm) == {"x": (4, 8, [2.0] * 12)}
    vlm.unload_adapter("x")
    assert state(vlm) == pristine


@pytest.mark.slow
def test_an_adapter_with_modules_to_save_loads_beside_others_and_unloads_to_the_base(
    tiny_path, tmp_path, busy
):
    vlm = load_tiny(tiny_path)
    pristine = state(vlm)
    saving = make_adapter(tiny_path, tmp_path / "saving", seed=6, modules_to_save=["language_model.norm"])
    vlm.load_adapter(saving)
    answer = vlm.ask(None, "Hi", **GREEDY).raw
    vlm.load_adapter(saving, "copy", activate=False)
    vlm.unload_adapter("saving")
    assert vlm.ask(None, "Hi", adapter="copy", **GREEDY).raw == answer != pristine["answers"][None]
    vlm.unload_adapter("copy")
    assert state(vlm) == pristine


@pytest.mark.slow
def test_plain_peft_would_rewrite_the_base_weights_that_glmlab_protects(tiny_path, bad_root):
    """Why init-pissa is refused: loading it with plain peft changes the base model's own weights."""
    from peft import PeftModel

    vlm = load_tiny(tiny_path)
    before = base_digest(vlm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PeftModel.from_pretrained(vlm.model, str(bad_root / "init-pissa")).unload()
    assert base_digest(vlm) != before


# ---- the server ----------------------------------------------------------------------------------

SERVED_KINDS = [*ROLLED_BACK, "truncated", "wrong-shapes", "init-pissa", "rank-over-cap", "not-lora"]


@pytest.fixture(scope="module")
def client(tiny_path, adapters, bad_root):
    from glmlab.serve import ServerSettings, create_app

    settings = ServerSettings(
        model="tiny",
        adapters={"alpha": str(adapters["alpha"])},
        api_key=API_KEY,
        adapter_roots=[str(bad_root)],
    )
    app = create_app(load_tiny(tiny_path), settings)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with TestClient(
        app, base_url="http://localhost", raise_server_exceptions=False, headers=headers
    ) as test_client:
        yield test_client, client_state(test_client)


def client_state(client) -> dict:
    """The models the server lists and what the base model and alpha answer."""
    answers = {}
    for model in ("tiny", "alpha"):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0,
            "max_tokens": 3,
        }
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        answers[model] = response.json()["choices"][0]["message"]["content"]
    return {"models": client.get("/v1/models").json(), "answers": answers}


@pytest.mark.parametrize("kind", SERVED_KINDS)
def test_the_server_answers_400_with_the_reason_and_keeps_serving(client, bad_root, kind):
    client, before = client
    for name, inplace in (("new", False), ("alpha", True)):
        body = {"lora_name": name, "lora_path": str(bad_root / kind), "load_inplace": inplace}
        response = client.post("/v1/load_lora_adapter", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_adapter", "lora_path")
        assert error["message"].startswith(f"lora_path '{bad_root / kind}': ")
        assert re.search(BAD[kind][1], error["message"])
    assert client_state(client) == before
