"""Training with the stock ecosystem: `Trainer` and LoRA from `peft`."""

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Trainer

import hf_hope

from ..helpers import RepeatedBatch, tiny_config, training_arguments


def test_trainer_fits_a_repeated_batch(tmp_path):
    model = hf_hope.HopeForCausalLM(tiny_config())
    data = RepeatedBatch(torch.randint(3, 97, (4, 24)), repeats=40)
    trainer = Trainer(model=model, args=training_arguments(tmp_path, max_steps=30), train_dataset=data)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < 0.5 * losses[0]


def test_lora_on_hope_projections_trains_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    base = hf_hope.HopeForCausalLM(tiny_config())
    base_state = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "in_proj", "g_proj", "o_proj"], task_type="CAUSAL_LM"
    )
    model = get_peft_model(base, lora)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)

    data = RepeatedBatch(torch.randint(3, 97, (4, 16)), repeats=20)
    trainer = Trainer(model=model, args=training_arguments(tmp_path / "run", max_steps=15), train_dataset=data)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0]

    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    probe = torch.randint(3, 97, (2, 12))
    model.eval()
    with torch.no_grad():
        expected = model(probe).logits

    fresh = hf_hope.HopeForCausalLM(tiny_config())
    fresh.load_state_dict(base_state)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(probe).logits, expected)
        with reloaded.disable_adapter():
            assert not torch.allclose(reloaded(probe).logits, expected)
