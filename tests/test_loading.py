import shutil
import warnings

import pytest

import glmlab
from glmlab.errors import ModelLoadError
from glmlab.loading import resolve_dtype


def test_load_tiny_warns_random_weights_and_uses_the_cache(tiny_path, glmlab_home):
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        vlm = glmlab.load("tiny")
    assert vlm.source == str(tiny_path) and tiny_path.is_relative_to(glmlab_home)


def test_load_from_a_plain_folder(tiny_path, tmp_path):
    folder = shutil.copytree(tiny_path, tmp_path / "my-checkpoint")
    vlm = glmlab.load(folder)
    assert vlm.source == str(folder)
    assert vlm.model.config.image_token_id == 151363
    assert type(vlm.processor).__name__ == "Glm46VProcessor"


def test_a_checkpoint_without_eos_ids_is_a_load_error(tiny_path, tmp_path):
    import json

    folder = shutil.copytree(tiny_path, tmp_path / "no-eos")
    for name, section in (("config.json", "text_config"), ("generation_config.json", None)):
        data = json.loads((folder / name).read_text())
        (data[section] if section else data).pop("eos_token_id")
        (folder / name).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="defines no eos_token_id"):
        glmlab.load(folder)


def test_offline_hub_id_gives_a_clear_error():
    with pytest.raises(ModelLoadError) as caught:
        glmlab.load("zai-org/GLM-4.6V-Flash")
    message = str(caught.value)
    assert message.startswith("zai-org/GLM-4.6V-Flash: could not be loaded")
    assert "glmlab.load('tiny')" in message and "--local-dir DIR" in message


def test_missing_local_folder_is_named():
    with pytest.raises(ModelLoadError, match=r"\./no/such/dir: no such folder"):
        glmlab.load("./no/such/dir")


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="is not a checkpoint folder \\(no config.json\\)"):
        glmlab.load(tmp_path)


def test_quantize_on_cpu_says_it_needs_cuda(tiny_path):
    with pytest.raises(ModelLoadError, match=r"quantize='4bit' needs a CUDA GPU"):
        glmlab.load(tiny_path, device="cpu", quantize="4bit")


def test_bad_dtype_and_device_are_named(tiny_path):
    with pytest.raises(ModelLoadError, match="dtype='float8'"):
        glmlab.load(tiny_path, dtype="float8")
    with pytest.raises(ModelLoadError, match="device='tpu'"):
        glmlab.load(tiny_path, device="tpu")


def test_auto_dtype_on_cpu_is_float32():
    import torch

    assert resolve_dtype("auto", "cpu") == torch.float32


def test_explicit_dtype_is_applied(tiny_path):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vlm = glmlab.load(tiny_path, dtype="bfloat16")
    assert vlm.dtype == torch.bfloat16
    assert vlm.ask(None, "hi", max_new_tokens=2, temperature=0).usage.completion_tokens == 2


def test_max_image_pixels_at_load_sets_the_default_budget(tiny_path, red_image):
    vlm = glmlab.load(tiny_path, max_image_pixels=56 * 56)
    assert vlm.max_image_pixels == 56 * 56
    assert vlm.ask(red_image.resize((224, 224)), "?", max_new_tokens=1).usage.image_tokens == 4
