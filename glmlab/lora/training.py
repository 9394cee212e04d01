"""`train(recipe, output_dir)`: one LoRA run on the transformers Trainer, from recipe to adapter folder.

The Trainer does what it does well and unchanged (the loop, gradient accumulation, mixed precision,
checkpoints and `resume_from_checkpoint`, tqdm bars in a terminal or notebook, `accelerate launch` and
`torchrun` with DDP, DeepSpeed or FSDP, the trackers of `report_to`, best-checkpoint selection and
early stopping on the held-out score); glmlab adds what is specific to GLM-V: samples built by the
inference prompt path (`LoraCollator`), a loss computed only where the labels are (logits for the answer tokens only, not
for every prompt and image token over a 151,552-token vocabulary), held-out answers scored with a
glmlab.eval metric, and an output folder that both glmlab and plain peft load.

Nothing is lost on a crash: every file of the output folder is replaced whole (a temporary file
renamed into place), the Trainer's checkpoints restore weights, optimiser, data order and RNG state,
and a resume first checks that the checkpoints come from the same recipe and data
(`run_fingerprint.json`, written when the run starts), so two runs are never mixed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainerState, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME

from glmlab.config import field_values
from glmlab.errors import ConfigError
from glmlab.files import atomic_write, fsync_dir
from glmlab.lora.card import write_run_files
from glmlab.lora.collator import IGNORE_INDEX, LoraCollator, answer_end_token_id
from glmlab.lora.data import load_training_data
from glmlab.lora.evaluation import AnswerEvaluator
from glmlab.lora.progress import TrainingProgress
from glmlab.lora.recipe import LoraRecipe, load_recipe

if TYPE_CHECKING:  # annotations only: no import of the model at run time
    from glmlab.model import VLM

logger = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
INITIAL_EVAL_FILE = "initial_eval.json"
RUN_FINGERPRINT_FILE = "run_fingerprint.json"
# Recipe fields a resumed run may change: they label the run, set how often it logs, evaluates and
# saves, or trade memory for time, and leave the adapter's weights as they would have been.
RESUMABLE_CHANGES = (
    "name",
    "description",
    "evaluation.every_steps",
    "checkpoints.every_steps",
    "checkpoints.total_limit",
    "logging_steps",
    "hardware.gradient_checkpointing",
    "evaluation.early_stopping_patience",
    "evaluation.early_stopping_threshold",
    "tracking.report_to",
    "tracking.run_name",
)


@dataclass
class TrainResult:
    """A finished run: where the adapter is, the loss/metric history, and the final numbers."""

    output_dir: Path
    recipe: LoraRecipe
    history: pd.DataFrame
    metrics: dict[str, float]
    global_step: int
    train_runtime_s: float
    eval_answers: pd.DataFrame | None = field(default=None, repr=False)
    best_step: int | None = None  # the step of the adapter kept, when evaluation.select_best

    @property
    def adapter_dir(self) -> Path:
        """The PEFT adapter folder (the output folder itself): `glmlab.load(base, adapter=...)` takes it."""
        return self.output_dir

    def plot(self):
        """A matplotlib Figure: training loss per step, and the held-out metric on a second axis."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7, 3.5))
        axis = figure.add_subplot()
        if "loss" in self.history:
            losses = self.history.dropna(subset=["loss"])
            axis.plot(losses["step"], losses["loss"], color="tab:blue", label="training loss")
        axis.set_xlabel("optimiser step")
        axis.set_ylabel("loss", color="tab:blue")
        metric = f"eval_{self.recipe.evaluation.metric}"
        if metric in self.history:
            scores = self.history.dropna(subset=[metric])
            twin = axis.twinx()
            twin.plot(scores["step"], scores[metric], "o-", color="tab:orange", label=metric)
            twin.set_ylabel(metric, color="tab:orange")
            twin.set_ylim(-0.02, 1.02)
        axis.set_title(f"LoRA {self.recipe.name} on {self.recipe.base_model}")
        figure.tight_layout()
        return figure


def train(
    recipe: LoraRecipe | str | Path,
    output_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: list[TrainerCallback] | None = None,
    progress: bool = True,
    **overrides: Any,
) -> TrainResult:
    """Train a LoRA adapter as `recipe` says and write it to `output_dir`.

    recipe: a LoraRecipe, a recipe YAML path, or a shipped recipe's name ("shapes").
    overrides: recipe fields to change for this run, by dotted path (e.g. base_model="tiny",
    **{"optimizer.max_steps": 20}); the given recipe object is never modified.
    resume: continue from the newest checkpoint in output_dir/checkpoints (after a crash or kill);
        refused when the checkpoints come from another recipe or other data (the message names them;
        only the fields in RESUMABLE_CHANGES may differ).
    callbacks: extra transformers TrainerCallbacks.
    progress: a progress bar over the steps and one line per held-out evaluation (False: silent).
    Returns a TrainResult; the folder holds adapter_config.json, adapter_model.safetensors,
    glmlab.json and README.md.
    """
    recipe = load_recipe(recipe).replace(**overrides)
    output_dir = Path(output_dir)
    checkpoint = _checkpoint_to_resume(output_dir, resume)
    _check_same_run(output_dir, checkpoint, run_fingerprint(recipe))  # before the model loads
    device, precision = resolve_device_and_precision(recipe)
    torch.manual_seed(recipe.seed)
    vlm = _load_base(recipe, device, precision)
    data = load_training_data(recipe)
    fingerprint = run_fingerprint(recipe, data)
    _check_same_run(output_dir, checkpoint, fingerprint)
    model = _with_adapter(vlm, recipe)
    collator = LoraCollator(
        vlm.processor,
        eos_token_id=answer_end_token_id(vlm.tokenizer, vlm.eos_token_ids),
        system=recipe.prompt.system,
        prompt=recipe.prompt.instruction,
        thinking=recipe.prompt.thinking,
        max_image_pixels=recipe.prompt.max_image_pixels,
        padding_side=recipe.optimizer.padding_side,
    )
    evaluator = AnswerEvaluator(vlm, collator, data.eval, recipe) if data.eval is not None else None
    trainer = LoraTrainer(
        model=model,
        args=training_arguments(recipe, output_dir, device, precision),
        data_collator=collator,
        train_dataset=data.train,
        eval_dataset=data.eval,
        callbacks=callbacks,
        evaluator=evaluator,
        optimizers=(_optimizer(model, recipe), None),
    )
    for replaced in TrainingProgress.replaces:
        trainer.remove_callback(replaced)
    trainer.add_callback(TrainingProgress(enabled=progress))
    if recipe.evaluation.early_stopping_patience is not None:
        trainer.add_callback(
            EarlyStoppingCallback(
                recipe.evaluation.early_stopping_patience, recipe.evaluation.early_stopping_threshold
            )
        )
    _log_tensorboard_to(trainer, output_dir / TENSORBOARD_DIR)
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(output_dir / RUN_FINGERPRINT_FILE, json.dumps(fingerprint, indent=2) + "\n")
    initial = _initial_metrics(trainer, output_dir, checkpoint)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*use_cache=True.*")
        trained_loss = _train(trainer, checkpoint)
    best_step = trainer.state.best_global_step if recipe.evaluation.select_best else None
    evaluated = _evaluated_at(trainer.state.log_history, trainer.state.global_step)
    if evaluator is not None and best_step is None and not evaluated:
        trainer.evaluate()  # (with select_best the adapter kept is an evaluated checkpoint's)
    runtime = time.perf_counter() - start
    history = trainer.state.log_history
    metrics = {
        **initial,
        **_final_metrics(history, best_step),
        "train_loss": _train_loss(history, trained_loss),
    }
    _save(trainer, output_dir, recipe, vlm, data, metrics, runtime, best_step)
    return TrainResult(
        output_dir=output_dir,
        recipe=recipe,
        history=history_frame(trainer.state.log_history, initial),
        metrics=metrics,
        global_step=trainer.state.global_step,
        train_runtime_s=runtime,
        eval_answers=evaluator.last_answers if evaluator else None,
        best_step=best_step,
    )


def _train(trainer: LoraTrainer, checkpoint: str | None) -> float:
    """`trainer.train`, except from the checkpoint of a run that had finished training (killed while
    evaluating or saving the adapter): then only its weights (the best checkpoint's, with
    evaluation.select_best) and state are loaded, as the Trainer does, because resuming at max_steps in mid-epoch would run one step past it. Returns the loss.
    """
    if checkpoint is not None:
        state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME))
        if state.max_steps and state.global_step >= state.max_steps:
            model = trainer.model
            if trainer.args.load_best_model_at_end and state.best_model_checkpoint:
                checkpoint = state.best_model_checkpoint  # as the Trainer would have ended
            model.load_adapter(checkpoint, model.active_adapter, is_trainable=True)
            trainer.state = state
            return 0.0
    return trainer.train(resume_from_checkpoint=checkpoint).training_loss


class LoraTrainer(Trainer):
    """The Trainer with a loss over the answer tokens only and generation-based evaluation."""

    loss_is_scaled_for_ga = True  # compute_loss divides by the accumulated batch's label count itself

    def __init__(self, *args: Any, evaluator: AnswerEvaluator | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.evaluator = evaluator

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Token-mean cross-entropy over the labelled positions, logits computed only there.

        `num_items_in_batch` is the label count of the whole accumulated (and, across devices,
        gathered) batch, so accumulation and data parallelism give the same gradient as one big batch.
        """
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        outputs = model(**inputs, logits_to_keep=keep)
        targets = labels[:, 1:][keep[:, :-1]]
        loss = torch.nn.functional.cross_entropy(outputs.logits.float(), targets, reduction="sum")
        if num_items_in_batch is None:
            loss = loss / targets.numel() / self.current_gradient_accumulation_steps
        else:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Score greedy answers on the held-out records and log them like any Trainer evaluation."""
        if self.evaluator is None:
            return {}
        metrics = self.evaluator.run(metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


# ---- setup ---------------------------------------------------------------------------------------


def resolve_device_and_precision(recipe: LoraRecipe) -> tuple[str, str]:
    """The device this process trains on and the precision; automatic choices are logged with why."""
    if not torch.cuda.is_available():
        if recipe.hardware.quantize_4bit:
            raise ConfigError(
                "hardware.quantize_4bit=True: QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels) and this "
                "machine has none; set hardware.quantize_4bit: false to train in full precision on the CPU."
            )
        if recipe.hardware.precision == "fp16":
            raise ConfigError(
                "hardware.precision='fp16': fp16 mixed precision needs a CUDA GPU; use 'auto' or 'fp32'."
            )
        precision = "fp32" if recipe.hardware.precision == "auto" else recipe.hardware.precision
        if recipe.hardware.precision == "auto":
            logger.info("precision='auto' -> fp32 (CPU: bfloat16 matmul is slow there)")
        if recipe.hardware.deepspeed or recipe.hardware.fsdp:
            raise ConfigError(
                "hardware.deepspeed / hardware.fsdp: DeepSpeed and FSDP shard a model over CUDA GPUs and this "
                "machine has none; on CPUs `glmlab train --nproc N` runs plain data parallelism (DDP, gloo)."
            )
        return "cpu", precision
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if recipe.hardware.precision != "auto":
        return device, recipe.hardware.precision
    precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    logger.info(
        "precision='auto' -> %s (%s)",
        precision,
        "the checkpoint is bf16" if precision == "bf16" else "this GPU lacks bf16",
    )
    return device, precision


def _load_base(recipe: LoraRecipe, device: str, precision: str):
    from glmlab.loading import load

    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM WEIGHTS.*")
        vlm = load(
            recipe.base_model,
            dtype=dtype,
            device=device,
            revision=recipe.revision,
            quantize="4bit" if recipe.hardware.quantize_4bit else None,
            max_image_pixels=recipe.prompt.max_image_pixels,
        )
    if recipe.hardware.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        vlm.model = prepare_model_for_kbit_training(vlm.model, use_gradient_checkpointing=False)
    return vlm


def _with_adapter(vlm: VLM, recipe: LoraRecipe):
    """The PeftModel around vlm.model (LoRA layers are injected in place, so vlm itself trains too)."""
    from peft import LoraConfig, get_peft_model

    model_type = vlm.model.config.model_type
    targets = recipe.adapter.target_regex_for(model_type)
    if targets != recipe.adapter.target_regex:
        logger.info(
            "adapter.targets: the attention projections (a %s base: see MOE_LANGUAGE_TARGETS)", model_type
        )
    named = {name for name, _ in vlm.model.named_modules() if re.fullmatch(targets, name)}
    config = LoraConfig(
        r=recipe.adapter.rank,
        lora_alpha=recipe.adapter.alpha,
        lora_dropout=recipe.adapter.dropout,
        target_modules=targets,
        modules_to_save=recipe.adapter.modules_to_save or None,
        bias="none",
    )
    try:
        model = get_peft_model(vlm.model, config)
    except ValueError as error:  # peft's NoMatchingPeftModuleError among others
        raise ConfigError(f"adapter.targets={targets!r} on {recipe.base_model}: {error}") from None
    adapted = adapted_module_names(model)
    _check_adapted_as_named(adapted, named, targets, recipe.base_model, model_type)
    logger.info(
        "target_modules -> %d modules (%d under language_model.layers, %d vision)",
        len(adapted),
        sum("language_model.layers" in name for name in adapted),
        sum(".visual." in name for name in adapted),
    )
    return model


def _check_adapted_as_named(
    adapted: list[str], named: set[str], targets: str, base_model: str, model_type: str
) -> None:
    """Refuse a run whose adapter is not on exactly the modules the regex names.

    peft may rewrite targets: on transformers-5 MoE models (glm4v_moe among them) it reduces a regex to
    leaf names and moves gate_proj / up_proj / down_proj onto the fused routed experts, so the adapter
    would train modules the recipe never named (and none it did)."""
    wrapper = "base_model.model."
    got = {name.removeprefix(wrapper) for name in adapted if not name.endswith(".base_layer")}
    extra, missing = sorted(got - named), sorted(named - got)
    if not extra and not missing:
        return
    raise ConfigError(
        f"adapter.targets={targets!r} on {base_model} ({model_type}): peft adapted {len(extra)} module(s) "
        f"the regex does not name {extra[:3]} and left out {len(missing)} it names {missing[:3]}. On "
        "mixture-of-experts bases peft reads gate_proj/up_proj/down_proj as the routed experts and drops "
        "the regex's anchoring; adapt the attention projections only there (the default targets, "
        "adapter.adapt_vision: none)."
    )


def adapted_module_names(model: Any) -> list[str]:
    """Names of the modules that carry a LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def _optimizer(model: Any, recipe: LoraRecipe) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; with LoRA+ the B matrices get a larger learning rate."""
    if recipe.optimizer.loraplus_lr_ratio:
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=recipe.optimizer.learning_rate,
            loraplus_lr_ratio=recipe.optimizer.loraplus_lr_ratio,
            loraplus_weight_decay=recipe.optimizer.weight_decay,
        )
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    return torch.optim.AdamW(
        trainable, lr=recipe.optimizer.learning_rate, weight_decay=recipe.optimizer.weight_decay
    )


def training_arguments(
    recipe: LoraRecipe, output_dir: Path, device: str, precision: str
) -> TrainingArguments:
    """The Trainer's arguments for a recipe (checkpoints go to output_dir/checkpoints)."""
    optimizer, evaluation, hardware = recipe.optimizer, recipe.evaluation, recipe.hardware
    evaluate = evaluation.samples > 0 and evaluation.every_steps > 0
    selects = evaluation.select_best or evaluation.early_stopping_patience is not None
    return TrainingArguments(
        output_dir=str(output_dir / CHECKPOINT_DIR),
        per_device_train_batch_size=optimizer.batch_size,
        gradient_accumulation_steps=optimizer.gradient_accumulation_steps,
        learning_rate=optimizer.learning_rate,
        lr_scheduler_type=optimizer.lr_scheduler,
        warmup_steps=optimizer.warmup_ratio,
        weight_decay=optimizer.weight_decay,
        max_grad_norm=optimizer.max_grad_norm,
        num_train_epochs=optimizer.epochs,
        max_steps=optimizer.max_steps or -1,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        activation_checkpointing=recipe.hardware.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False}
        if recipe.hardware.gradient_checkpointing
        else None,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=evaluation.every_steps if evaluate else None,
        save_strategy="steps",
        save_steps=recipe.checkpoints.every_steps,
        save_total_limit=recipe.checkpoints.total_limit,
        logging_steps=recipe.logging_steps,
        seed=recipe.seed,
        data_seed=recipe.data_seed,
        load_best_model_at_end=evaluation.select_best,
        # every glmlab.eval metric is a score in [0, 1], higher is better
        metric_for_best_model=f"eval_{evaluation.metric}" if selects else None,
        greater_is_better=True if selects else None,
        report_to=recipe.tracking.report_to or "none",
        run_name=recipe.tracking.run_name or recipe.name,
        deepspeed=hardware.deepspeed,
        fsdp=hardware.fsdp or None,
        fsdp_config=hardware.fsdp_config or None,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
    )


def _log_tensorboard_to(trainer: Trainer, folder: Path) -> None:
    """TensorBoard events go to <output>/tensorboard rather than the Trainer's <checkpoints>/runs/<date>,
    unless TENSORBOARD_LOGGING_DIR says otherwise (the Trainer's callback reads it)."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(folder)


def _checkpoint_to_resume(output_dir: Path, resume: bool) -> str | None:
    folder = output_dir / CHECKPOINT_DIR
    last = last_complete_checkpoint(folder) if folder.is_dir() else None
    if resume:
        if last is None:
            logger.warning("resume=True but %s holds no complete checkpoint: starting from step 0", folder)
        return None if last is None else str(last)
    if last is not None:
        raise ConfigError(
            f"{output_dir}: holds checkpoints of an earlier run ({last.name}); pass resume=True "
            "(--resume) to continue it, or choose another output folder."
        )
    return None


def run_fingerprint(recipe: LoraRecipe, data: Any = None) -> dict[str, Any]:
    """What makes two runs the same run: the recipe fields that change the adapter, and the data."""
    fields = {key: value for key, value in field_values(recipe).items() if key not in RESUMABLE_CHANGES}
    fingerprint = {"recipe": json.loads(json.dumps(fields, default=str))}  # tuples -> lists, as stored
    if data is not None:
        fingerprint["data"] = data.describe()
    return fingerprint


def _check_same_run(output_dir: Path, checkpoint: str | None, current: dict[str, Any]) -> None:
    """Refuse to resume checkpoints written by another recipe or on other data, naming what differs."""
    path = output_dir / RUN_FINGERPRINT_FILE
    if checkpoint is None:
        return
    if not path.is_file():
        if "data" in current:  # warn once: this check runs before and after the data is loaded
            logger.warning(
                "%s has no %s (an older glmlab wrote it): cannot check that its checkpoints come from "
                "this recipe and data",
                output_dir,
                RUN_FINGERPRINT_FILE,
            )
        return
    try:
        saved = json.loads(path.read_bytes())
    except ValueError as error:
        raise ConfigError(f"{path}: not valid JSON ({error}); the file was edited or corrupted.") from None
    differences = [
        f"{key}={saved['recipe'].get(key)!r} in the checkpoints' run, {current['recipe'].get(key)!r} now"
        for key in sorted(saved["recipe"].keys() | current["recipe"].keys())
        if saved["recipe"].get(key) != current["recipe"].get(key)
    ]
    if (
        "data" in current
        and "data" in saved
        and saved["data"]["fingerprint"] != current["data"]["fingerprint"]
    ):
        before, now = saved["data"], current["data"]
        differences.append(
            f"data: {before['source']} (fingerprint {before['fingerprint'][:12]}) in the checkpoints' "
            f"run, {now['source']} (fingerprint {now['fingerprint'][:12]}) now"
        )
    if differences:
        raise ConfigError(
            f"{output_dir}: its checkpoints come from another run; resuming would mix two runs. "
            f"Differences: {'; '.join(differences)}. Resume with the same recipe and data, or choose "
            "another output folder."
        )


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint the Trainer finished writing, skipping one cut short by a kill.

    The Trainer writes trainer_state.json last, and transformers' `get_last_checkpoint` does not check
    for it, so a kill while saving would make resume crash; the half-written folder is left in place
    (the Trainer overwrites it when it reaches that step again).
    """
    candidates = sorted(
        (path for path in folder.glob("checkpoint-*") if path.name.split("-", 1)[1].isdigit()),
        key=lambda path: int(path.name.split("-", 1)[1]),
        reverse=True,
    )
    for path in candidates:
        if _is_complete(path):
            return path
        logger.warning("%s was not fully written (interrupted while saving?): skipping it", path)
    return None


def _is_complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return True


# ---- metrics and history ------------------------------------------------------------------------


def _initial_metrics(trainer: LoraTrainer, output_dir: Path, checkpoint: str | None) -> dict[str, float]:
    """The held-out score before any training (chance level), kept on disk so a resumed run reports it."""
    path = output_dir / INITIAL_EVAL_FILE
    if checkpoint is not None and path.exists():
        return json.loads(path.read_text())
    if trainer.evaluator is None:
        return {}
    measured = trainer.evaluator.run("initial_eval")
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(measured))
    logger.info("before training: %s", measured)
    return measured


def _evaluated_at(log_history: list[dict], step: int) -> bool:
    return any(
        entry.get("step") == step and any(key.startswith("eval_") for key in entry) for entry in log_history
    )


def _final_metrics(log_history: list[dict], step: int | None = None) -> dict[str, float]:
    """The latest held-out scores, or those of `step` (the selected best checkpoint) when given."""
    latest: dict[str, float] = {}
    for entry in log_history:
        if step is None or entry.get("step") == step:
            latest.update({key: value for key, value in entry.items() if key.startswith("eval_")})
    return latest


def _train_loss(log_history: list[dict], fallback: float) -> float:
    """Mean training loss of the whole run from the logged losses, each weighted by the steps it covers.

    The Trainer's own `training_loss` covers only the steps of the last session, so a resumed run
    would report another number than an uninterrupted one; the log history is restored with the
    checkpoint. Steps after the last logging step are not counted (`fallback` when none was logged).
    """
    total = steps = last = 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) > last:
            total += entry["loss"] * (entry["step"] - last)
            steps += entry["step"] - last
            last = entry["step"]
    return total / steps if steps else fallback


def history_frame(log_history: list[dict], initial: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per logged step: loss, learning_rate, grad_norm, epoch and the eval metrics."""
    entries = [entry for entry in log_history if "train_runtime" not in entry]
    if initial:
        entries = [
            {"step": 0, **{key.replace("initial_eval", "eval"): value for key, value in initial.items()}}
        ] + entries
    if not entries:
        return pd.DataFrame(columns=["step", "loss"])
    frame = pd.DataFrame(entries).groupby("step", as_index=False).first()
    return frame.sort_values("step").reset_index(drop=True)


def _save(
    trainer: LoraTrainer,
    output_dir: Path,
    recipe: LoraRecipe,
    vlm: VLM,
    data: Any,
    metrics: dict[str, float],
    runtime: float,
    best_step: int | None,
) -> None:
    _save_adapter(trainer, output_dir)
    if not trainer.is_world_process_zero():
        return
    model = trainer.model
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    write_run_files(
        output_dir,
        {
            "recipe": recipe.to_dict(),
            "base_model": recipe.base_model,
            "base_source": vlm.source,
            "base_revision": recipe.revision or getattr(vlm.model.config, "_commit_hash", None),
            "data": data.describe(),
            "metrics": metrics,
            "global_step": trainer.state.global_step,
            "best_step": best_step,
            "train_runtime_s": runtime,
            "trainable_parameters": trainable,
            "adapted_modules": len(adapted_module_names(model)),
        },
    )


def _save_adapter(trainer: LoraTrainer, output_dir: Path) -> None:
    """The final adapter, saved in a staging folder and then renamed file by file into output_dir.

    Each rename replaces a whole file, so a kill leaves the previous file or the new one, never a
    truncated safetensors; a resumed run saves it again from the last checkpoint.
    """
    staging = output_dir / ".adapter.staging"
    if trainer.is_world_process_zero() and staging.exists():
        shutil.rmtree(staging)  # left by a run killed while saving
    trainer.save_model(str(staging))
    if not trainer.is_world_process_zero():
        return
    skipped = ("training_args.bin", "README.md")  # pickled arguments (glmlab.json says it all); peft's card
    for path in sorted(staging.iterdir(), key=lambda path: path.name != "adapter_model.safetensors"):
        if path.name in skipped or not path.is_file():
            continue
        with path.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(path, output_dir / path.name)
    shutil.rmtree(staging)
    fsync_dir(output_dir)
