"""Which input tokens made the model predict a chosen next token: gradient × input and integrated gradients.

Both attribute the log-probability of the target continuation,
``f(e) = log p(target | prompt)``, to the prompt's input embeddings ``e``; a
token's score is the sum over its embedding dimensions. Integrated gradients
(Sundararajan et al. 2017) integrate the gradient along the straight line from a
baseline to the real embeddings with Gauss-Legendre quadrature, as captum does by
default, so the scores add up to ``f(e) - f(baseline)`` (completeness); the
result reports how closely they do.

The default baseline puts the end-of-text token's embedding at every prompt
position but the first, which keeps its real embedding (and so gets no
attribution): the first position is where modern LMs park their attention sink,
and moving it along the path makes ``f`` jump (on SmolLM2 by 4 nats within 0.3 %
of the path), so no quadrature converges; with it fixed, 64 points are complete
to 0.02 % there. An all-zero baseline is also offered, but RMSNorm and LayerNorm
are scale-invariant, so near zero the output changes abruptly too. If the
scores miss completeness by more than ``tolerance`` the number of points is
doubled, up to ``max_steps``; the remaining gap is always reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from lmforge.errors import LmforgeError
from lmforge.explain.anatomy import encode, encode_target, token_strings
from lmforge.models.info import model_device

METHODS = ("integrated_gradients", "gradient_x_input")
BASELINES = ("eos", "zeros")


@dataclass
class Attribution:
    method: str
    tokens: list[str]
    token_ids: list[int]
    target: str
    target_ids: list[int]
    scores: list[float]
    target_logprob: float
    baseline_logprob: float | None = None
    baseline: str | None = None
    steps: int | None = None
    completeness_gap: float | None = None  # |sum(scores) - (f(x) - f(baseline))| / |f(x) - f(baseline)|

    def to_dict(self) -> dict:
        return asdict(self)


class TargetLogprob:
    """``f(prompt_embeds) = log p(target_ids | prompt)``, batched over a leading dimension of prompt embeddings.

    The target tokens (all but the last, which is only predicted) are appended
    with their real embeddings; only the prompt's embeddings vary.
    """

    def __init__(self, model, target_ids: list[int]):
        self.model = model
        self.target = torch.tensor(target_ids, dtype=torch.long, device=model_device(model))
        with torch.no_grad():
            self.target_embeds = model.get_input_embeddings()(self.target[None, :-1])

    def __call__(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        batch, prompt_len = prompt_embeds.shape[:2]
        embeds = torch.cat([prompt_embeds, self.target_embeds.expand(batch, -1, -1).to(prompt_embeds.dtype)], dim=1)
        logits = self.model(inputs_embeds=embeds).logits[:, prompt_len - 1:]
        logprobs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        return logprobs.gather(-1, self.target.expand(batch, -1)[..., None]).squeeze(-1).sum(-1)


def _prepare(model, tokenizer, text: str, target: str):
    prompt_ids = encode(tokenizer, text)
    target_ids = encode_target(tokenizer, target)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(torch.tensor([prompt_ids], device=model_device(model)))
    return prompt_ids, target_ids, embeds, TargetLogprob(model, target_ids)


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in [0, 1] and weights summing to 1 for the path integral (captum's default rule)."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (nodes + 1), 0.5 * weights


def integrated_gradients_embeds(f, embeds: torch.Tensor, baseline: torch.Tensor, steps: int,
                                batch_size: int = 16) -> torch.Tensor:
    """Integrated gradients of a batched scalar function ``f`` at ``embeds`` (shape [1, ...]), element-wise."""
    alphas, weights = gauss_legendre(steps)
    path_grad = torch.zeros_like(embeds, dtype=torch.float32)
    for start in range(0, steps, batch_size):
        a = torch.tensor(alphas[start:start + batch_size], dtype=embeds.dtype, device=embeds.device)
        a = a.view(-1, *([1] * (embeds.dim() - 1)))
        w = torch.tensor(weights[start:start + batch_size], dtype=torch.float32, device=embeds.device).view_as(a)
        points = (baseline + a * (embeds - baseline)).detach().requires_grad_(True)
        (grads,) = torch.autograd.grad(f(points).sum(), points)
        path_grad += (w * grads.float()).sum(0, keepdim=True)
    return (embeds - baseline).float() * path_grad


def baseline_embeds(model, tokenizer, embeds: torch.Tensor, baseline: str) -> torch.Tensor:
    if baseline == "zeros":
        return torch.zeros_like(embeds)
    if baseline == "eos":
        if tokenizer.eos_token_id is None:
            raise LmforgeError("the tokenizer has no end-of-text token for the baseline; pass --baseline zeros")
        with torch.no_grad():
            return model.get_input_embeddings()(torch.full(embeds.shape[:2], tokenizer.eos_token_id, device=embeds.device))
    raise LmforgeError(f"unknown baseline '{baseline}'; use one of: {', '.join(BASELINES)}")


def integrated_gradients(model, tokenizer, text: str, target: str, steps: int = 64, batch_size: int = 16,
                         baseline: str = "eos", keep_first: bool = True, tolerance: float = 0.01,
                         max_steps: int = 512) -> Attribution:
    """Integrated gradients of log p(target | text), per prompt token."""
    if steps < 2:
        raise LmforgeError(f"--steps {steps} is too few for integrated gradients; use 32 or more")
    prompt_ids, target_ids, embeds, f = _prepare(model, tokenizer, text, target)
    baseline_name, baseline = baseline, baseline_embeds(model, tokenizer, embeds, baseline)
    if keep_first:
        baseline[:, 0] = embeds[:, 0]
    with torch.no_grad():
        f_x, f_base = f(torch.cat([embeds, baseline])).tolist()
    while True:
        scores = integrated_gradients_embeds(f, embeds, baseline, steps, batch_size).sum(-1)[0]
        gap = abs(float(scores.sum()) - (f_x - f_base)) / max(abs(f_x - f_base), 1e-12)
        if gap <= tolerance or steps * 2 > max_steps:
            break
        steps *= 2
    name = baseline_name + (" (first token kept)" if keep_first else "")
    return Attribution("integrated_gradients", token_strings(tokenizer, prompt_ids), prompt_ids, target, target_ids,
                       scores.tolist(), f_x, f_base, name, steps, gap)


def gradient_x_input(model, tokenizer, text: str, target: str) -> Attribution:
    """The gradient of the target log-probability times the input embedding, per prompt token."""
    prompt_ids, target_ids, embeds, f = _prepare(model, tokenizer, text, target)
    embeds = embeds.detach().requires_grad_(True)
    value = f(embeds)
    (grads,) = torch.autograd.grad(value.sum(), embeds)
    scores = (grads.float() * embeds.detach().float()).sum(-1)[0]
    return Attribution("gradient_x_input", token_strings(tokenizer, prompt_ids), prompt_ids, target, target_ids,
                       scores.tolist(), float(value.detach()))


def attribute(model, tokenizer, text: str, target: str, method: str = "integrated_gradients", steps: int = 64,
              baseline: str = "eos") -> Attribution:
    """One attribution method by name; ``steps`` and ``baseline`` apply to integrated gradients."""
    if method == "integrated_gradients":
        return integrated_gradients(model, tokenizer, text, target, steps=steps, baseline=baseline)
    if method == "gradient_x_input":
        return gradient_x_input(model, tokenizer, text, target)
    raise LmforgeError(f"unknown attribution method '{method}'; use one of: {', '.join(METHODS)}")
