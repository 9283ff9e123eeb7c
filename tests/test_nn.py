"""Building blocks: invariants that the parity tests do not isolate."""

from __future__ import annotations

import torch

from tokenwave.nn.snake import Snake


def test_snake_fast_path_is_bit_identical_and_differentiable():
    snake = Snake(5)
    with torch.no_grad():
        snake.alpha.uniform_(0.0, 2.0)
        snake.alpha[0, 0, 0] = 0.0  # a zero alpha stays finite (the 1e-9 term)
    x = torch.randn(2, 5, 1000)
    want = x + (snake.alpha + 1e-9).reciprocal() * torch.sin(snake.alpha * x).pow(2)
    with torch.inference_mode():
        fast = snake(x)
    assert torch.equal(fast, want) and torch.isfinite(fast).all()
    xg = x.clone().requires_grad_(True)
    y = snake(xg)
    assert torch.equal(y.detach(), want)
    y.sum().backward()
    assert xg.grad is not None and snake.alpha.grad is not None
