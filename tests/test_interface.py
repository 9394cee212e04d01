"""glmlab.interface: VLM and Client satisfy the protocols callers check, and share one default sentinel."""

from __future__ import annotations

import inspect

from glmlab.client import Client
from glmlab.interface import DEFAULT_ADAPTER, LocalModel, Model, RemoteModel
from glmlab.model import VLM


def test_a_loaded_model_is_local_and_a_client_is_remote(vlm):
    client = Client("http://127.0.0.1:9/v1")  # never contacted
    assert isinstance(vlm, Model) and isinstance(vlm, LocalModel) and not isinstance(vlm, RemoteModel)
    assert (
        isinstance(client, Model) and isinstance(client, RemoteModel) and not isinstance(client, LocalModel)
    )
    assert not isinstance(object(), Model)


def test_every_adapter_parameter_defaults_to_the_one_sentinel():
    defaults = {
        f"{cls.__name__}.{name}": inspect.signature(getattr(cls, name)).parameters["adapter"].default
        for cls in (VLM, Client)
        for name in ("ask", "chat", "chat_stream")
        if "adapter" in inspect.signature(getattr(cls, name)).parameters
    }
    assert len(defaults) >= 5 and set(defaults.values()) == {DEFAULT_ADAPTER}
    assert repr(DEFAULT_ADAPTER) == "DEFAULT_ADAPTER"
