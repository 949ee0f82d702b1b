"""TRL's `SFTTrainer` with a retrofitted model: the level clock, a frozen base, and LoRA in the supported order.

LoRA comes first, the retrofit second: either `get_peft_model`, then `retrofit`, then `SFTTrainer` without
`peft_config`; or `SFTTrainer(peft_config=...)` on the original model, then `retrofit(trainer.model)` before
`train()`. Passing `peft_config` with an already retrofitted model makes `SFTTrainer` call `get_peft_model` on it,
which freezes everything that is not LoRA, the CMS levels included; the callback warns.
"""

import datasets
import peft
import pytest
import torch
from transformers import TrainerCallback

import hf_hope

from ..helpers import tiny_family_model
from .helpers import SENTENCES, tiny_tokenizer

trl = pytest.importorskip("trl")

LEVELS = [{"period": None}, {"period": 3}, {"period": 1}]  # cms_levels.0 every 3 steps, cms_levels.1 every step
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}
INPUT_IDS = torch.tensor([[4, 15, 30, 5, 4, 20], [6, 7, 8, 9, 10, 11]])


class Snapshots(TrainerCallback):
    """A copy of every parameter after each optimizer step (the models are tiny)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs) -> None:
        self.steps.append({name: parameter.detach().clone() for name, parameter in model.named_parameters()})


def sft_trainer(model, output_dir, steps: int, callbacks=(), **kwargs) -> "trl.SFTTrainer":
    args = trl.SFTConfig(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        max_length=16,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,  # TRL's default bf16 leaves accelerate's autocast on the model's forward after training
        disable_tqdm=True,
    )
    data = datasets.Dataset.from_dict({"text": SENTENCES})
    return trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tiny_tokenizer(),
        callbacks=list(callbacks),
        **kwargs,
    )


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], part: str) -> bool:
    names = [name for name in after if part in name]
    assert names, f"no parameter named like {part!r}"
    return any(not torch.equal(before[name], after[name]) for name in names)


def test_sft_trainer_updates_each_cms_level_at_its_period_and_leaves_the_base_alone(tmp_path):
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS))
    initial = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    snapshots = Snapshots()
    trainer = sft_trainer(model, tmp_path, steps=6, callbacks=[hf_hope.LevelClockCallback(), snapshots])
    trainer.train()
    steps = [initial, *snapshots.steps]
    assert len(steps) == 7
    slow = [changed(steps[step - 1], steps[step], ".cms_levels.0.") for step in range(1, 7)]
    fast = [changed(steps[step - 1], steps[step], ".cms_levels.1.") for step in range(1, 7)]
    assert slow == [False, False, True, False, False, True]
    assert fast == [True] * 6
    outside = [name for name in initial if ".cms_levels." not in name and ".cms_mixing." not in name]
    assert all(torch.equal(initial[name], steps[-1][name]) for name in outside)
    assert trainer.state.log_history[-2]["level_clock/p3_updates"] == 2
    hf_hope.save_cms_adapter(model, tmp_path / "adapter")  # nothing outside the adapter changed


def test_lora_then_retrofit_then_sft_trainer_trains_both_and_reloads(tmp_path):
    model = peft.get_peft_model(tiny_family_model("llama"), peft.LoraConfig(**LORA))
    model = hf_hope.retrofit(model, hf_hope.CMSConfig(levels=LEVELS))
    initial = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    trainer = sft_trainer(model, tmp_path, steps=3, callbacks=[hf_hope.LevelClockCallback()])
    assert trainer.model is model
    trainer.train()
    after = dict(model.named_parameters())
    assert changed(initial, after, "lora_B") and changed(initial, after, ".cms_levels.0.")
    base = [name for name in initial if not any(part in name for part in ("lora_", ".cms_levels.", ".cms_mixing."))]
    assert all(torch.equal(initial[name], after[name]) for name in base)
    model.save_pretrained(tmp_path / "saved")  # the LoRA weights, first
    hf_hope.save_cms_adapter(model, tmp_path / "saved")  # then the CMS levels, with the same PeftModel
    reloaded = peft.PeftModel.from_pretrained(tiny_family_model("llama"), tmp_path / "saved")
    reloaded = hf_hope.load_cms_adapter(reloaded, tmp_path / "saved").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=INPUT_IDS).logits, model.eval()(input_ids=INPUT_IDS).logits)


def test_sft_trainer_peft_config_then_retrofit_of_its_model_trains_lora_and_the_levels(tmp_path):
    trainer = sft_trainer(
        tiny_family_model("llama"),
        tmp_path,
        steps=3,
        callbacks=[hf_hope.LevelClockCallback()],
        peft_config=peft.LoraConfig(**LORA),
    )
    model = hf_hope.retrofit(trainer.model, hf_hope.CMSConfig(levels=LEVELS))
    assert model is trainer.model
    initial = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    trainer.train()
    after = dict(model.named_parameters())
    assert changed(initial, after, "lora_B") and changed(initial, after, ".cms_levels.0.")
    assert trainer.state.log_history[-2]["level_clock/p3_updates"] == 1


def test_sft_trainer_peft_config_on_a_retrofitted_model_freezes_the_cms_levels(tmp_path):
    """The unsupported order: TRL wraps the retrofitted model with get_peft_model, which freezes the CMS levels."""
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS))
    trainer = sft_trainer(
        model, tmp_path, steps=1, callbacks=[hf_hope.LevelClockCallback()], peft_config=peft.LoraConfig(**LORA)
    )
    trainable = [name for name, parameter in trainer.model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    with pytest.warns(UserWarning, match="no CMS level is trainable.*apply LoRA first and retrofit second"):
        trainer.train()
