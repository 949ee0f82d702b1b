"""`save_cms_adapter` refuses to drop changes made outside the adapter since `retrofit`, and saves what it may."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer

import hf_hope
from hf_hope.conversion import CMS_WEIGHTS_NAME

from ..helpers import RepeatedBatch, tiny_family_model, training_arguments

LEVELS = [{"period": None}, {"period": 2}, {"period": 1}]
INPUT_IDS = torch.tensor([[5, 17, 3, 99, 42, 7, 64, 2, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def train(model: torch.nn.Module, output_dir, steps: int = 4) -> None:
    data = RepeatedBatch(torch.randint(0, 128, (4, 12)), repeats=steps)
    Trainer(model=model, args=training_arguments(output_dir, max_steps=steps), train_dataset=data).train()


def perturb(model: torch.nn.Module, only: str) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if only in name:
                parameter.add_(0.01 * torch.randn_like(parameter))


def test_a_trainer_run_on_an_unfrozen_base_makes_save_refuse(tmp_path):
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS), freeze_base=False)
    train(model, tmp_path / "run")
    with pytest.raises(ValueError, match=r"model\.embed_tokens\.weight.*save_pretrained.*ignore_changes_outside"):
        hf_hope.save_cms_adapter(model, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
    hf_hope.save_cms_adapter(model, tmp_path / "adapter", ignore_changes_outside=True)
    assert (tmp_path / "adapter" / CMS_WEIGHTS_NAME).is_file()


def test_a_trainer_run_on_a_frozen_base_saves_an_adapter_that_reproduces_the_model(tmp_path):
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS))
    train(model, tmp_path / "run")
    hf_hope.save_cms_adapter(model, tmp_path / "adapter")
    reloaded = hf_hope.load_cms_adapter(tiny_family_model("llama"), tmp_path / "adapter").eval()
    with torch.no_grad():
        expected = model.eval()(input_ids=INPUT_IDS).logits
        assert not torch.equal(expected, tiny_family_model("llama")(input_ids=INPUT_IDS).logits)  # it trained
        assert torch.equal(reloaded(input_ids=INPUT_IDS).logits, expected)


def test_the_smallest_change_to_one_element_is_noticed(tmp_path):
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS), freeze_base=False)
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight[3, 5] += 1e-6
    with pytest.raises(ValueError, match=r"after it \(1: model\.layers\.1\.self_attn\.o_proj\.weight\)"):
        hf_hope.save_cms_adapter(model, tmp_path)


def test_casts_and_moves_are_not_changes_but_training_after_them_is(tmp_path):
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS), freeze_base=False)
    hf_hope.save_cms_adapter(model.to(torch.float64), tmp_path / "float64")
    hf_hope.save_cms_adapter(model.to("cpu", torch.bfloat16), tmp_path / "bfloat16")
    with torch.no_grad():
        model.model.embed_tokens.weight[7, 0] += 0.01
    with pytest.raises(ValueError, match=r"after it \(1: model\.embed_tokens\.weight\)"):
        hf_hope.save_cms_adapter(model, tmp_path / "changed")


def test_a_parameter_made_trainable_after_retrofit_cannot_be_vouched_for(tmp_path):
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS))
    model.lm_head.requires_grad_(True)
    with pytest.raises(ValueError, match=r"became trainable after it \(1: lm_head\.weight\)"):
        hf_hope.save_cms_adapter(model, tmp_path)
    model.lm_head.requires_grad_(False)
    hf_hope.save_cms_adapter(model, tmp_path)


def test_lora_weights_count_as_saved_once_the_folder_holds_them_as_they_are(tmp_path):
    model = hf_hope.retrofit(get_peft_model(tiny_family_model("llama"), LORA), hf_hope.CMSConfig(levels=LEVELS))
    perturb(model, "lora_B")
    with pytest.raises(
        ValueError, match=r"PEFT parameter tensors changed \(4: .*lora_B.*peft_model\.save_pretrained\(folder\)"
    ):
        hf_hope.save_cms_adapter(model, tmp_path)
    model.save_pretrained(tmp_path)
    hf_hope.save_cms_adapter(model, tmp_path)
    with pytest.raises(ValueError, match="PEFT parameter tensors"):  # the inner model cannot say what PEFT saved
        hf_hope.save_cms_adapter(model.base_model.model, tmp_path)
    perturb(model, "lora_A")
    with pytest.raises(ValueError, match="PEFT parameter tensors"):  # the saved LoRA weights are stale now
        hf_hope.save_cms_adapter(model, tmp_path)


def test_lora_added_after_retrofit_renames_the_base_without_false_alarms(tmp_path):
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS), freeze_base=False)
    model = get_peft_model(model, LORA)  # q_proj.weight becomes q_proj.base_layer.weight, and PEFT freezes it
    with pytest.raises(ValueError, match="PEFT parameter tensors") as refusal:  # the new LoRA weights have no reference
        hf_hope.save_cms_adapter(model, tmp_path)
    assert "base model" not in str(refusal.value)
    model.save_pretrained(tmp_path)
    hf_hope.save_cms_adapter(model, tmp_path)


def test_a_model_loaded_from_a_checkpoint_warns_that_it_cannot_be_checked(tmp_path):
    hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS)).save_pretrained(tmp_path / "full")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    with pytest.warns(UserWarning, match="not retrofitted in this process"):
        hf_hope.save_cms_adapter(loaded, tmp_path / "adapter")
    assert (tmp_path / "adapter" / CMS_WEIGHTS_NAME).is_file()
