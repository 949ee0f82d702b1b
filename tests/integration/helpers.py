"""A tiny word-level tokenizer and text data, built offline, for the TRL and lm-evaluation-harness tests."""

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SENTENCES = [
    "the cat sat on the mat",
    "the dog ran in the park",
    "a bird sang in the tree",
    "the sun is warm and the sky is blue",
    "we read a book by the fire",
    "the river runs to the sea",
    "a small boat sails on the lake",
    "the children play in the garden",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `SENTENCES` (about 40 tokens, so it fits the tiny models' vocabularies)."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["<pad>", "<s>", "</s>", "<unk>"]
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=special))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
