"""`OnlineLearner`: level-clocked learning on a token stream, bounded memory, and learning across processes."""

import pytest
import torch

from hf_hope import HopeForCausalLM
from hf_hope.clock.online_learner import OnlineLearner

from ..helpers import tiny_config

SLOW = "model.layers.0.cms.levels.1.mlp.up_proj.weight"  # period 4 in tiny_config
FAST = "model.layers.0.cms.levels.0.mlp.up_proj.weight"  # period 1


def stream(length: int) -> torch.Tensor:
    pattern = torch.randint(3, 97, (24,), generator=torch.Generator().manual_seed(0))
    return pattern.repeat(length // 24 + 1)[:length]


def learner(model: HopeForCausalLM | None = None) -> OnlineLearner:
    if model is None:
        torch.manual_seed(0)
        model = HopeForCausalLM(tiny_config())
    return OnlineLearner(model, chunk_size=16, context_size=8, learning_rate=1e-2)


def test_fast_levels_adapt_every_chunk_and_slow_levels_every_period():
    online = learner()
    changes = {SLOW: [], FAST: []}
    tokens = stream(16 * 8)
    for start in range(0, len(tokens), 16):
        before = {name: online.model.get_parameter(name).detach().clone() for name in changes}
        online.observe(tokens[start : start + 16])
        for name in changes:
            changes[name].append(not torch.equal(before[name], online.model.get_parameter(name)))
    assert changes[FAST] == [True] * 8
    assert changes[SLOW] == [False, False, False, True, False, False, False, True]


def test_the_loss_falls_on_a_repeating_stream_and_memory_stays_bounded():
    online = learner()
    losses = []
    tokens = stream(16 * 30 + 5)
    for start in range(0, len(tokens), 7):  # arrives in pieces that do not line up with chunks
        losses += online.observe(tokens[start : start + 7])
    assert len(losses) == 30 and online.tokens_seen == len(tokens)
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
    assert len(online.state_dict()["context"]) == 8 and len(online.state_dict()["pending"]) == 5


def test_learning_continues_across_processes_exactly(tmp_path):
    tokens = stream(16 * 7 + 3)
    straight = learner()
    straight.observe(tokens)

    first = learner()
    first.observe(tokens[:50])  # three chunks and two pending tokens; the slow level holds three gradients
    first.save(tmp_path)
    second = learner(HopeForCausalLM.from_pretrained(tmp_path))
    second.load(tmp_path)
    second.observe(tokens[50:])
    assert second.clock.step == straight.clock.step == 7
    for name, parameter in straight.model.named_parameters():
        assert torch.equal(parameter, second.model.get_parameter(name)), name


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="chunk_size=1 is invalid"):
        OnlineLearner(HopeForCausalLM(tiny_config()), chunk_size=1)
    with pytest.raises(ValueError, match="no tokenizer"):
        learner().observe("some text")
    with pytest.raises(FileNotFoundError, match="not written by OnlineLearner.save"):
        learner().load(tmp_path)
