"""Deep optimizers against slow, literal transcriptions of the paper's equations (float64), and their integration."""

import copy

import pytest
import torch
from transformers import Trainer

from hf_hope import M3, DeepMomentum, DeltaMomentum, LevelClockCallback, newton_schulz
from hf_hope.optim.newton_schulz import CUBIC, muon_scale

from ..helpers import RepeatedBatch, tiny_model, training_arguments

SHAPES = [(4, 6), (7, 3), (5,)]
STEPS = 7


def make_params(seed: int = 0, shapes=SHAPES) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=generator, dtype=torch.float64)) for s in shapes]


def gradients(seed: int = 1, shapes=SHAPES) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(*s, generator=generator, dtype=torch.float64) for s in shapes] for _ in range(STEPS)]


def run(optimizer_cls, grads, shapes=SHAPES, **kwargs) -> list[torch.Tensor]:
    params = make_params(shapes=shapes)
    optimizer = optimizer_cls(params, **kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach() for p in params]


def ns_reference(x: torch.Tensor, steps: int, coefficients) -> torch.Tensor:
    """Newton–Schulz by its definition on the matrix view, without the wide-orientation trick."""
    a, b, c = coefficients
    matrix = x.reshape(x.shape[0], -1)
    y = matrix / matrix.norm()
    for _ in range(steps):
        y = a * y + b * (y @ y.T) @ y + c * (y @ y.T) @ (y @ y.T) @ y
    return y.view_as(x)


@pytest.mark.parametrize("preconditioner", ["none", "adam"])
def test_delta_momentum_matches_eq22_with_explicit_outer_product(preconditioner):
    lr, alpha, beta2, eps, wd = 0.05, 0.9, 0.99, 1e-8, 0.1
    grads = gradients()
    got = run(DeltaMomentum, grads, lr=lr, alpha=alpha, preconditioner=preconditioner, beta2=beta2, weight_decay=wd)
    params = [p.detach().clone() for p in make_params()]
    for index, w in enumerate(params):
        m = torch.zeros(w.numel(), dtype=torch.float64)
        v = torch.zeros(w.numel(), dtype=torch.float64)
        for t, step_grads in enumerate(grads, start=1):
            g = step_grads[index].reshape(-1)
            v = beta2 * v + (1 - beta2) * g * g
            P = (
                torch.diag(1 / ((v / (1 - beta2**t)).sqrt() + eps))
                if preconditioner == "adam"
                else torch.eye(g.numel())
            )
            m = m @ (alpha * torch.eye(g.numel(), dtype=torch.float64) - lr * torch.outer(g, g)) - lr * P.double() @ g
            w = w * (1 - lr * wd) + m.view_as(w)
        torch.testing.assert_close(got[index], w, rtol=1e-12, atol=1e-12)


DEEP_SHAPES = [(4, 6), (7, 3), (4, 6), (5,)]  # two matrices share one MLP memory; the vector goes to AdamW


@pytest.mark.parametrize("orthogonalize", [False, True])
@pytest.mark.parametrize("hidden", [0, 3])
def test_deep_momentum_matches_eq23_with_autograd_inner_objective(orthogonalize, hidden):
    lr, alpha, eta, wd, adamw_lr = 0.03, 0.8, 0.5, 0.01, 0.02
    grads = gradients(shapes=DEEP_SHAPES)
    kwargs = dict(lr=lr, alpha=alpha, memory_lr=eta, hidden=hidden, orthogonalize=orthogonalize, weight_decay=wd)
    got = run(DeepMomentum, grads, shapes=DEEP_SHAPES, adamw_lr=adamw_lr, **kwargs)
    weights = [w.detach().clone() for w in make_params(shapes=DEEP_SHAPES)[:3]]
    momenta = [torch.zeros_like(w) for w in weights]
    mlps = {  # shared per matrix shape: W1 (c x h) = 0, W2 (h x c) ~ N(0, 1) from the seed
        cols: [
            torch.zeros(cols, hidden, dtype=torch.float64),
            torch.randn(hidden, cols, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
        ]
        for cols in (6, 3)
    }

    def mlp(W1, W2, u):
        keys = u / u.norm(dim=1, keepdim=True)
        return torch.tanh(keys @ W2.T) @ W1.T

    for step_grads in grads:
        for cols, members in ((6, [0, 2]), (3, [1])):
            theta = [x.clone().requires_grad_() for x in mlps[cols]]
            keys_count = sum(step_grads[i].shape[0] for i in members)
            inner = sum(torch.sum(mlp(*theta, step_grads[i]) * step_grads[i]) for i in members) / keys_count
            grads_theta = torch.autograd.grad(inner, theta) if hidden else (0, 0)
            mlps[cols] = [alpha * x.detach() - eta * d for x, d in zip(theta, grads_theta, strict=True)]
        for i, w in enumerate(weights):
            g = step_grads[i]
            momenta[i] = alpha * momenta[i] - eta * g  # grad of <M, U> with respect to M is U
            out = momenta[i] + mlp(*mlps[g.shape[1]], g)
            step_lr = lr
            if orthogonalize:
                out, step_lr = ns_reference(out, 5, (3.4445, -4.7750, 2.0315)), lr * muon_scale(w.shape)
            weights[i] = w * (1 - lr * wd) + step_lr * out
    for i, w in enumerate(weights):
        torch.testing.assert_close(got[i], w, rtol=1e-10, atol=1e-10)
    vector = make_params(shapes=DEEP_SHAPES)[3]
    reference = torch.optim.AdamW([vector], lr=adamw_lr, weight_decay=wd)
    for step_grads in grads:
        vector.grad = step_grads[3].clone()
        reference.step()
    torch.testing.assert_close(got[3], vector.detach(), rtol=1e-13, atol=1e-13)


def test_deep_momentum_memory_stays_bounded_on_large_gradients():
    """A gradient 1e3 times larger than usual, every step: the shared MLP must not blow up (silu made it NaN)."""
    param = torch.nn.Parameter(torch.zeros(16, 8, dtype=torch.float64))
    optimizer = DeepMomentum([param], lr=0.02, alpha=0.95, memory_lr=1.0, hidden=8)
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(16, 8, generator=generator, dtype=torch.float64)
    for _ in range(300):
        param.grad = 1e3 * (direction + 0.1 * torch.randn(16, 8, generator=generator, dtype=torch.float64))
        optimizer.step()
    memory = optimizer.state["deep_momentum/0/16x8"]
    assert torch.isfinite(param).all() and torch.isfinite(memory["w2"]).all()
    # |grad_W1| <= |U| |tanh(Z)| / n <= |U| sqrt(n h) / n, and retention alpha sums it to at most 1 / (1 - alpha)
    largest_u = 1e3 * 1.5 * (16 * 8) ** 0.5
    bound = 1.0 * largest_u * (16 * 8) ** 0.5 / 16 / (1 - 0.95)
    assert memory["w1"].norm() < bound


@pytest.mark.parametrize("accumulation", ["sum", "ema"])
def test_m3_matches_algorithm_1_loops_and_adamw(accumulation):
    lr, betas, alpha, f, eps, wd = 0.01, (0.9, 0.99, 0.7), 0.6, 3, 1e-8, 0.05
    grads = gradients()
    got = run(
        M3, grads, lr=lr, betas=betas, alpha=alpha, f=f, accumulation=accumulation, weight_decay=wd, adamw_lr=0.02
    )
    b1, b2, b3 = betas
    ema = accumulation == "ema"
    ns = lambda x: ns_reference(x, 5, (3.4445, -4.7750, 2.0315))  # noqa: E731
    for index, w in enumerate(make_params()[:2]):
        w = w.detach().clone()
        M1, M2, V = torch.zeros_like(w), torch.zeros_like(w), torch.zeros_like(w)
        O2 = torch.zeros_like(w)
        history = []
        for k in range(STEPS // f + 1):  # lower-frequency iteration k
            if k > 0:
                chunk = sum(history[(k - 1) * f : k * f])
                M2 = b3 * M2 + (1 - b3) * chunk if ema else M2 + b3 * chunk
                O2 = ns(M2)
            for t in range(k * f + 1, min((k + 1) * f, STEPS) + 1):
                g = grads[t - 1][index]
                history.append(g)
                M1 = b1 * M1 + (1 - b1) * g if ema else M1 + b1 * g
                V = b2 * V + (1 - b2) * g**2 if ema else V + b2 * g**2
                V_hat = V / (1 - b2**t) if ema else V
                w = w * (1 - lr * wd) - lr * (ns(M1) + alpha * O2) / torch.sqrt(V_hat + eps)
        torch.testing.assert_close(got[index], w, rtol=1e-10, atol=1e-10)
    bias = make_params()[2]
    reference = torch.optim.AdamW([bias], lr=0.02, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    for step_grads in grads:
        bias.grad = step_grads[2].clone()
        reference.step()
    torch.testing.assert_close(got[2], bias.detach(), rtol=1e-13, atol=1e-13)


def test_m3_adamw_selection_by_name_and_predicate():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 3))
    by_name = M3(model.named_parameters(), adamw_params={"0.weight"})
    assert [by_name.uses_adamw(p) for p in model.parameters()] == [True, False, True]
    by_predicate = M3(model.parameters(), adamw_params=lambda name, p: p.shape == (5, 4))
    assert [by_predicate.uses_adamw(p) for p in model.parameters()] == [True, False, True]
    with pytest.raises(ValueError, match="adamw_params"):
        M3(model.parameters(), adamw_params={"0.weight"})


def test_newton_schulz_converges_to_polar_factor():
    generator = torch.Generator().manual_seed(0)
    for shape in [(5, 5), (4, 7), (8, 3)]:
        u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=generator, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=generator, dtype=torch.float64))
        k = min(shape)
        s = torch.linspace(1.0, 2.0, k, dtype=torch.float64)
        x = u[:, :k] @ torch.diag(s) @ v[:, :k].T
        torch.testing.assert_close(newton_schulz(x, 40, CUBIC), u[:, :k] @ v[:, :k].T, rtol=0, atol=1e-10)
        singular = torch.linalg.svdvals(newton_schulz(x, 5))  # Muon's quintic: a band, not convergence
        assert singular.min() > 0.6 and singular.max() < 1.3
        torch.testing.assert_close(newton_schulz(x, 5), ns_reference(x, 5, (3.4445, -4.7750, 2.0315)))


OPTIMIZERS = [
    (DeltaMomentum, {"lr": 1e-3, "preconditioner": "adam"}),
    (DeepMomentum, {"lr": 0.01}),
    (M3, {"lr": 1e-3, "f": 2, "adamw_lr": 1e-3}),
]


@pytest.mark.parametrize(("cls", "kwargs"), OPTIMIZERS, ids=lambda x: getattr(x, "__name__", ""))
def test_state_dict_round_trip_is_bitwise(cls, kwargs):
    grads = gradients()[:6]

    def steps(params, optimizer, chunk):
        for step_grads in chunk:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.clone()
            optimizer.step()

    straight = make_params()
    optimizer = cls(straight, **kwargs)
    steps(straight, optimizer, grads)
    resumed = make_params()
    first = cls(resumed, **kwargs)
    steps(resumed, first, grads[:3])
    saved = copy.deepcopy(first.state_dict())
    second = cls(resumed, **kwargs)
    second.load_state_dict(saved)
    steps(resumed, second, grads[3:])
    for a, b in zip(straight, resumed, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("cls", "kwargs"), OPTIMIZERS, ids=lambda x: getattr(x, "__name__", ""))
def test_parameter_without_grad_is_skipped(cls, kwargs):
    params = make_params()
    optimizer = cls(params, **kwargs)
    for p, g in zip(params, gradients()[0], strict=True):
        p.grad = g
    optimizer.step()
    before = [p.detach().clone() for p in params]
    state_before = copy.deepcopy(optimizer.state[params[0]])
    params[0].grad = None
    optimizer.step()
    assert torch.equal(params[0], before[0])
    for key, value in state_before.items():
        now = optimizer.state[params[0]][key]
        assert torch.equal(now, value) if torch.is_tensor(value) else now == value
    assert not torch.equal(params[1], before[1])


BAD = [
    (DeltaMomentum, "lr", -1.0),
    (DeltaMomentum, "alpha", 1.5),
    (DeltaMomentum, "preconditioner", "shampoo"),
    (DeltaMomentum, "beta2", 1.0),
    (DeltaMomentum, "eps", 0.0),
    (DeltaMomentum, "weight_decay", -0.1),
    (DeepMomentum, "memory_lr", 0.0),
    (DeepMomentum, "hidden", -1),
    (DeepMomentum, "orthogonalize", "yes"),
    (DeepMomentum, "ns_steps", 0),
    (DeepMomentum, "ns_coefficients", (1.0, 2.0)),
    (DeepMomentum, "seed", 1.5),
    (M3, "betas", (0.9, 0.99)),
    (M3, "alpha", -1.0),
    (M3, "f", 0),
    (M3, "accumulation", "max"),
    (M3, "adamw_lr", -1.0),
    (M3, "adamw_betas", (0.9, 1.0)),
    (M3, "adamw_eps", 0.0),
    (M3, "adamw_params", 3),
]


@pytest.mark.parametrize(("cls", "name", "value"), BAD)
def test_bad_hyperparameters_raise_naming_them(cls, name, value):
    with pytest.raises(ValueError, match=rf"{name}="):
        cls(make_params(), **{name: value})


def test_bad_value_in_a_param_group_is_refused():
    params = make_params()
    with pytest.raises(ValueError, match="weight_decay="):
        M3([{"params": params[:1], "weight_decay": -1.0}])


TRAINER_OPTIMIZERS = [
    (DeltaMomentum, {"lr": 3e-3, "preconditioner": "adam"}),
    (DeepMomentum, {"lr": 0.02, "adamw_lr": 1e-2}),
    (M3, {"lr": 3e-4, "f": 4, "eps": 1e-4, "adamw_lr": 1e-2}),  # eps bounds steps where |g| is tiny
]


@pytest.mark.parametrize(("cls", "kwargs"), TRAINER_OPTIMIZERS, ids=lambda x: getattr(x, "__name__", ""))
def test_trainer_with_level_clock_trains_and_steps_slow_level_on_its_period(cls, kwargs, tmp_path):
    model = tiny_model(dtype=torch.float32).train()
    if cls is not DeltaMomentum:  # Trainer passes no names: select the embedding and the head by identity
        tied = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
        kwargs = {**kwargs, "adamw_params": lambda name, p: id(p) in tied}
    sequences = torch.randint(2, 97, (4, 16), generator=torch.Generator().manual_seed(0))
    trainer = Trainer(
        model=model,
        args=training_arguments(tmp_path, max_steps=20),
        train_dataset=RepeatedBatch(sequences, repeats=20),
        optimizer_cls_and_kwargs=(cls, kwargs),
        callbacks=[LevelClockCallback()],
    )
    trainer.train()
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert isinstance(optimizer, cls)
    slow = model.model.layers[0].cms.levels[1].mlp.up_proj.weight  # period 4: due at steps 4, 8, ..., 20
    fast = model.model.layers[0].cms.levels[0].mlp.up_proj.weight
    assert optimizer.state[slow]["step"] == 5 and optimizer.state[fast]["step"] == 20
    if cls is not DeltaMomentum:
        assert optimizer.uses_adamw(model.get_input_embeddings().weight) and not optimizer.uses_adamw(fast)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
