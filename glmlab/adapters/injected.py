"""`AdapterSet`: the named LoRA adapters injected into one model, each load a transaction.

Adapters are injected with peft itself (not transformers' wrappers, which demand a newer peft), so the
model stays its plain class and several adapters stay loaded side by side. Each load is checked before
the model is touched (`check_for_loading`), injected under a fresh internal name (a "slot") beside the
others, verified, and only then given its public name; on any failure every trace of it is removed
(`_PeftState.restore`), so the model, its adapters and the active one are exactly as before.
`VLM` holds one `AdapterSet` and adds its lock and prefix-cache upkeep around it.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glmlab.adapters.folder import AdapterInfo, check_for_loading, inspect_adapter, module_name
from glmlab.errors import AdapterError


class AdapterSet:
    """Named adapters on the model `get_model()` returns; `version` changes with every load and unload."""

    def __init__(self, get_model: Callable[[], Any], model_name: str) -> None:
        self._get_model = get_model
        self.model_name = model_name
        self.paths: dict[str, str] = {}  # name -> the folder it was loaded from
        self.active: str | None = None
        self.peft: Any = None  # the PeftModel that manages injected adapters, once one is loaded
        # name -> the name peft knows it by: each load gets its own, so a replacement is loaded beside
        # the adapter it replaces and swapped in only once it loaded in full
        self.slots: dict[str, str] = {}
        self._slot_ids = itertools.count()
        self.version = 0
        self._mixable, self._mixable_version = True, -1

    @property
    def model(self) -> Any:
        return self._get_model()

    def load(self, path: Path, name: str, *, activate: bool, replace: bool) -> str:
        """Check, inject and name the adapter at `path` (see the module docstring); returns `name`."""
        if name in self.paths and not replace:
            raise AdapterError(
                f"adapter name {name!r} is already loaded (from {self.paths[name]}); "
                "unload it first, choose another name, or pass replace=True."
            )
        info = inspect_adapter(path)
        check_for_loading(info, self._base_modules())
        slot = f"glmlab_{next(self._slot_ids)}"
        self._inject(info, slot)
        old = self.slots.get(name)
        self.slots[name], self.paths[name] = slot, str(path)
        self.version += 1
        if old is not None:
            self.peft.delete_adapter(old)
        self.activate(name if activate else self.active)
        return name

    def activate(self, name: str | None) -> None:
        """Make `name` the adapter the model runs with; None for the base model."""
        if name is not None:
            self.check(name)
            self.peft.set_adapter(self.slots[name])
            self.peft.base_model.enable_adapter_layers()
        elif self.peft is not None:
            self.peft.base_model.disable_adapter_layers()
        self.active = name

    def unload(self, name: str) -> None:
        """Remove an adapter; with the last one gone the model is exactly the base model again."""
        self.check(name)
        self.peft.delete_adapter(self.slots.pop(name))
        del self.paths[name]
        self.version += 1
        if not self.paths:
            self.peft.unload()
            self.peft, self.active = None, None
            return
        self.activate(None if self.active == name else self.active)

    def can_mix(self) -> bool:
        """Whether rows for different adapters (and the base model) may share one batch (peft's mixed
        adapter batches). peft splits each adapted layer's input by sample, so no loaded adapter may
        adapt the vision tower (its input is every image's patches, not one row per sample) or train
        whole modules (modules_to_save wrappers pass other adapters' rows through unchanged)."""
        if self.peft is None:
            return True
        if self._mixable_version != self.version:
            from peft.tuners.tuners_utils import BaseTunerLayer
            from peft.utils.other import AuxiliaryTrainingWrapper

            self._mixable = not any(
                isinstance(module, AuxiliaryTrainingWrapper)
                or (isinstance(module, BaseTunerLayer) and ".visual." in f".{name}.")
                for name, module in self.model.named_modules()
            )
            self._mixable_version = self.version
        return self._mixable

    @contextlib.contextmanager
    def mixed(self, names: list[str | None]) -> Iterator[None]:
        """Run a batch whose row i uses adapter names[i] (None: the base model); see `can_mix`."""
        slots = [self.slots[name] if name is not None else "__base__" for name in names]
        self.peft.base_model.enable_adapter_layers()
        try:
            with self.peft.base_model._enable_peft_forward_hooks(adapter_names=slots):
                yield
        finally:
            self.activate(self.active)

    def check(self, name: str) -> None:
        """An AdapterError naming the loaded adapters unless `name` is one of them."""
        if name not in self.paths:
            known = ", ".join(self.paths) or "none loaded"
            raise AdapterError(
                f"adapter {name!r} is not loaded (loaded: {known}); use load_adapter(path, name)."
            )

    def _base_modules(self) -> dict[str, Any]:
        """The base model's modules by name, peft's wrappers seen through to the layers they wrap."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        modules: dict[str, Any] = {}
        inside: list[str] = []  # names of wrappers: what lies under them is peft's, not the model's
        for name, module in self.model.named_modules():
            if any(name.startswith(prefix) for prefix in inside):
                continue
            if isinstance(module, BaseTunerLayer):
                module, _ = module.get_base_layer(), inside.append(name + ".")
            elif isinstance(module, AuxiliaryTrainingWrapper):
                module, _ = module.original_module, inside.append(name + ".")
            modules[name] = module
        return modules

    def _inject(self, info: AdapterInfo, slot: str) -> None:
        """Add the checked adapter to the model as peft adapter `slot`, or leave everything as it was."""
        from peft import LoraConfig, PeftModel

        try:
            config = LoraConfig.from_peft_type(**info.config)
        except (TypeError, ValueError, KeyError, ImportError) as error:
            raise AdapterError(
                f"{info.path}: adapter_config.json is not a valid LoRA config ({error})."
            ) from None
        config.inference_mode = True
        before = _PeftState.of(self.model, self.peft)
        peft = self.peft
        try:
            if peft is None:
                peft = PeftModel(self.model, config, adapter_name=slot)
            else:
                peft.add_adapter(slot, config)
            result = peft.load_adapter(str(info.path), slot, is_trainable=False)
            _check_loaded(info, peft, slot, result)
        except BaseException as error:
            before.restore(self.model, self.peft, slot)
            self.activate(self.active)
            if not isinstance(error, Exception):
                raise
            if isinstance(error, AdapterError):
                raise
            raise AdapterError(
                f"{info.path}: could not be loaded as a LoRA adapter for {self.model_name} "
                f"({type(error).__name__}: {error}); nothing was changed."
            ) from error
        self.peft = peft


@dataclass
class _PeftState:
    """What an adapter load may change in the model, taken before it, so a failed load can be undone."""

    wrappers: set[str]  # names of the peft wrapper modules already in the model
    requires_grad: list[tuple[Any, bool]]
    training: bool
    had_peft_config: bool
    peft_active: Any  # the PeftModel's active adapter (None: no PeftModel yet)

    @classmethod
    def of(cls, model: Any, peft: Any) -> _PeftState:
        return cls(
            wrappers={name for name, module in model.named_modules() if _is_peft_wrapper(module)},
            requires_grad=[(parameter, parameter.requires_grad) for parameter in model.parameters()],
            training=model.training,
            had_peft_config=hasattr(model, "peft_config"),
            peft_active=None if peft is None else peft.active_adapter,
        )

    def restore(self, model: Any, peft: Any, slot: str) -> None:
        """Remove every trace of peft adapter `slot`, including what a half-done injection left: wrappers
        made for it are replaced by the layers they wrap, older wrappers lose only `slot`."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in list(model.named_modules()):
            if not _is_peft_wrapper(module):
                continue
            if name not in self.wrappers:
                unwrapped = (
                    module.get_base_layer() if isinstance(module, BaseTunerLayer) else module.original_module
                )
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, unwrapped)
            elif isinstance(module, BaseTunerLayer):
                module.delete_adapter(slot)
            else:
                others = [adapter for adapter in module.active_adapters if adapter != slot]
                module.delete_adapter(slot, new_active_adapters=others or None)
        if peft is not None:
            peft.peft_config.pop(slot, None)
            peft.set_adapter(self.peft_active)
        elif not self.had_peft_config and hasattr(model, "peft_config"):
            del model.peft_config
        for parameter, requires_grad in self.requires_grad:
            parameter.requires_grad_(requires_grad)
        model.train(self.training)


def _is_peft_wrapper(module: Any) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    return isinstance(module, BaseTunerLayer | AuxiliaryTrainingWrapper)


def _check_loaded(info: AdapterInfo, peft: Any, slot: str, result: Any) -> None:
    """peft loaded every weight the adapter's config asks for, used every tensor of the file, and the
    weights are finite numbers (NaN or infinite LoRA weights would poison every answer)."""
    tag = re.compile(rf"\.{re.escape(slot)}(?=\.|$)")

    def module_of(key: str) -> str:
        return module_name(tag.sub("", key))

    if result.missing_keys:
        missing = sorted({module_of(key) for key in result.missing_keys})
        raise AdapterError(
            f"{info.path}: target_modules selects {len(missing)} module(s) the file has no weights for "
            f"(first: {missing[0]}); the adapter does not match its own config."
        )
    if result.unexpected_keys:
        unused = sorted({module_of(key) for key in result.unexpected_keys})
        raise AdapterError(
            f"{info.path}: the file has weights for {len(unused)} module(s) target_modules does not select "
            f"(first: {unused[0]}); the adapter does not match its own config."
        )
    for key, parameter in peft.named_parameters():
        if tag.search(key) and not torch.isfinite(parameter).all():
            raise AdapterError(f"{info.path}: the weights of {module_of(key)} hold NaN or infinite values.")
