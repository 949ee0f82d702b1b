"""A retrofitted model in the ecosystem: LoRA (peft) next to the CMS adapter, and `Trainer` checkpoints."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, Trainer

import hf_hope
from hf_hope.conversion import RetrofittedFFN

from ..helpers import RepeatedBatch, tiny_family_model, training_arguments

INPUT_IDS = torch.tensor([[5, 17, 3, 99, 42, 7, 64, 2, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9]])


def lora_then_retrofit(init: str = "zero") -> torch.nn.Module:
    """The recipe: wrap with LoRA first (PEFT freezes the base), then retrofit (the new levels train)."""
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = get_peft_model(tiny_family_model("llama"), lora)
    return hf_hope.retrofit(model, hf_hope.CMSConfig(levels=[{"period": None}, {"period": 1}], init=init))


@pytest.mark.parametrize("init", ["zero", "lowrank", "units"])
def test_lora_and_cms_levels_train_together(init):
    model = lora_then_retrofit(init)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    adapter = ("lora_", ".cms_levels.", ".cms_mixing.")  # the mixing weights of init="units" train too
    assert trainable and all(any(part in name for part in adapter) for name in trainable)
    assert any("lora_" in name for name in trainable) and any(".cms_levels." in name for name in trainable)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(5):
        loss = model(input_ids=INPUT_IDS, labels=INPUT_IDS).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]) == (name not in trainable), name


@pytest.mark.parametrize("init", ["zero", "lowrank", "units"])
def test_lora_and_cms_adapter_save_and_reload(tmp_path, init):
    model = lora_then_retrofit(init)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    model.eval()
    expected = model(input_ids=INPUT_IDS).logits
    model.save_pretrained(tmp_path)  # the LoRA weights
    hf_hope.save_cms_adapter(model, tmp_path)  # the CMS levels, in the same folder

    reloaded = PeftModel.from_pretrained(tiny_family_model("llama"), tmp_path)
    reloaded = hf_hope.load_cms_adapter(reloaded, tmp_path).eval()
    assert any(isinstance(module, RetrofittedFFN) for module in reloaded.modules())
    assert torch.equal(reloaded(input_ids=INPUT_IDS).logits, expected)


@pytest.mark.parametrize("init", ["zero", "lowrank", "units"])
def test_trainer_trains_a_retrofitted_model_and_its_checkpoint_reloads(tmp_path, init):
    levels = [{"period": None}, {"period": 1}]
    model = hf_hope.retrofit(tiny_family_model("gpt2"), hf_hope.CMSConfig(levels=levels, init=init))
    data = RepeatedBatch(torch.randint(0, 128, (4, 16)), repeats=20)
    args = training_arguments(tmp_path, max_steps=10)
    args.save_strategy, args.save_steps = "steps", 10
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint-10").eval()
    assert type(reloaded) is type(model)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=INPUT_IDS).logits, model.eval()(input_ids=INPUT_IDS).logits)
