"""Fine-tune a retrofitted SmolLM2-135M on the code domain with `Trainer` and `LevelClockCallback`, on one or
several processes.

    python examples/multi_gpu/train_retrofit.py                                    # one process
    accelerate launch --config_file examples/multi_gpu/ddp.yaml examples/multi_gpu/train_retrofit.py
    accelerate launch --config_file examples/multi_gpu/fsdp2.yaml examples/multi_gpu/train_retrofit.py
    accelerate launch --cpu --num_processes 2 examples/multi_gpu/train_retrofit.py --max_steps 4 --excerpts  # CPU

The model and data come from the installed packages (nothing downloads); the first process converts the model
and prepares the data, the others wait for it. Checkpoints (with the clock's `level_clock.safetensors`) go to
`--output_dir`; `--resume` continues from the newest one.
"""

import argparse

import torch
from accelerate import PartialState
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)

import hf_hope
from hf_hope.data import load_domains
from hf_hope.smollm2 import cached_smollm2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="retrofit_run")
    parser.add_argument("--max_steps", type=int, default=64)
    parser.add_argument("--per_device_train_batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--excerpts", action="store_true", help="the small excerpts shipped in the package, for a try")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    arguments = parser.parse_args()

    with PartialState().main_process_first():  # one process converts the model and builds the data cache
        model_dir = cached_smollm2()
        code = load_domains(excerpts=arguments.excerpts)["code"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    hf_hope.retrofit(model, hf_hope.CMSConfig())  # the pretrained FFN frozen, two new levels at periods 16 and 1

    def tokenize(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        return tokenizer(batch["text"], truncation=True, max_length=arguments.block_size)

    train_set = code["train"].map(tokenize, batched=True, remove_columns=code["train"].column_names)
    args = TrainingArguments(
        output_dir=arguments.output_dir,
        max_steps=arguments.max_steps,
        per_device_train_batch_size=arguments.per_device_train_batch_size,
        learning_rate=arguments.learning_rate,
        save_steps=max(1, arguments.max_steps // 2),
        logging_steps=max(1, arguments.max_steps // 8),
        report_to="none",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[hf_hope.LevelClockCallback()],
    )
    trainer.train(resume_from_checkpoint=True if arguments.resume else None)
    if trainer.is_world_process_zero():
        print({key: value for key, value in trainer.state.log_history[-2].items() if key.startswith("level_clock/")})


if __name__ == "__main__":
    main()
