"""A ladder of pretraining runs (model sizes × token budgets) and its scaling law (the runs themselves are
trained by ``lmforge.workflows.scale``).

Every rung trains from scratch on the same tokenized corpus with a cosine
schedule matched to its own token budget (as Chinchilla did), and is recorded
as its own ``train`` run with its energy. N is the non-embedding parameter
count (Kaplan et al. 2020): at these sizes the embedding would dominate and
bend the curve. The fit leaves out a held-out rung, larger than every fitted
one, and predicts it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.scaling.fit import ScalingLaw, fit_scaling_law, prediction_interval


@dataclass
class Rung:
    width: int
    layers: int
    tokens: int
    non_embedding_params: int = 0
    params: int = 0
    eval_loss: float = float("nan")
    train_loss: float = float("nan")
    flops: float = 0.0
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    run_id: str | None = None
    held_out: bool = False


@dataclass
class LadderResult:
    rungs: list[Rung]
    law: ScalingLaw
    held_out: Rung | None = None
    predicted_loss: float | None = None
    prediction_interval: tuple[float, float] | None = None
    relative_error: float | None = None
    compute_optimal: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"rungs": [asdict(r) for r in self.rungs], "law": self.law.to_dict(), "warnings": self.warnings,
                "held_out": asdict(self.held_out) if self.held_out else None, "predicted_loss": self.predicted_loss,
                "prediction_interval": self.prediction_interval, "relative_error": self.relative_error,
                "compute_optimal": self.compute_optimal}


def parse_size(spec: str) -> tuple[int, int]:
    """'64x4' → (width 64, 4 layers)."""
    try:
        width, layers = (int(part) for part in spec.lower().split("x"))
    except ValueError:
        raise LmforgeError(f"model size '{spec}' is not WIDTHxLAYERS (e.g. 64x4)") from None
    return width, layers


def fit_ladder(rungs: list[Rung], flop_budget: float | None = None, bootstrap: int = 100, seed: int = 0,
               starts: int = 16) -> LadderResult:
    """Fit on the rungs not held out; predict the held-out one; plan N and D for ``flop_budget``."""
    fitted = [r for r in rungs if not r.held_out]
    law = fit_scaling_law([r.non_embedding_params for r in fitted], [r.tokens for r in fitted],
                          [r.eval_loss for r in fitted], bootstrap=bootstrap, seed=seed, starts=starts)
    result = LadderResult(rungs=rungs, law=law)
    lowest = min(r.eval_loss for r in fitted)
    if law.E < 0.05 * lowest:
        result.warnings.append(
            f"the fit put the irreducible loss E at {law.E:.3g}, far below every measured loss (lowest {lowest:.3f}): "
            "the runs are too short to identify it, so E, β and the compute-optimal plan are not trustworthy; "
            "use larger token budgets")
    held = [r for r in rungs if r.held_out]
    if held:
        target = held[0]
        result.held_out = target
        result.predicted_loss = float(law.predict(target.non_embedding_params, target.tokens))
        result.prediction_interval = prediction_interval(law, target.non_embedding_params, target.tokens)
        result.relative_error = (result.predicted_loss - target.eval_loss) / target.eval_loss
    if flop_budget:
        n_opt, d_opt = law.compute_optimal(flop_budget)
        result.compute_optimal = {"flops": flop_budget, "n_params": n_opt, "tokens": d_opt,
                                  "tokens_per_param": d_opt / n_opt, "predicted_loss": float(law.predict(n_opt, d_opt))}
    return result


def plot_ladder(result: LadderResult, out_dir: str | Path) -> list[Path]:
    """fit.png: loss against tokens per model size with the fitted curves and the held-out prediction;
    frontier.png: the compute-optimal N and D against FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    law = result.law
    figure, axis = plt.subplots(figsize=(7, 4.5))
    sizes = sorted({r.non_embedding_params for r in result.rungs})
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
    all_tokens = [r.tokens for r in result.rungs]
    grid = np.geomspace(min(all_tokens) / 1.5, max(all_tokens) * 2, 100)
    for size, color in zip(sizes, colors):
        rungs = [r for r in result.rungs if r.non_embedding_params == size]
        fitted = [r for r in rungs if not r.held_out]
        held = [r for r in rungs if r.held_out]
        axis.plot(grid, law.predict(size, grid), color=color, lw=1, ls="--" if held else "-")
        if fitted:
            axis.scatter([r.tokens for r in fitted], [r.eval_loss for r in fitted], color=color,
                         label=f"N = {size / 1e6:.3g}M")
        for r in held:
            axis.scatter([r.tokens], [r.eval_loss], color=color, marker="*", s=160,
                         label=f"held out N = {size / 1e6:.3g}M (measured)")
            axis.scatter([r.tokens], [result.predicted_loss], color="red", marker="x", s=80, label="prediction")
    axis.set_xscale("log")
    axis.set_xlabel("training tokens D")
    axis.set_ylabel("validation loss (nats/token)")
    axis.set_title(f"L = {law.E:.3f} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}", fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    fit_path = out_dir / "fit.png"
    figure.savefig(fit_path, dpi=120)
    plt.close(figure)

    paths = [fit_path]
    if law.alpha > 0 and law.beta > 0:
        flops = np.geomspace(1e12, 1e20, 50)
        optimal = np.array([law.compute_optimal(c) for c in flops])
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.loglog(flops, optimal[:, 0], label="N (non-embedding parameters)")
        axis.loglog(flops, optimal[:, 1], label="D (tokens)")
        axis.scatter([r.flops for r in result.rungs], [r.non_embedding_params for r in result.rungs], s=12,
                     color="gray", label="ladder runs (N)")
        axis.set_xlabel("training FLOPs C ≈ 6·N·D")
        axis.set_title("compute-optimal allocation under the fitted law", fontsize=10)
        axis.legend(fontsize=8)
        figure.tight_layout()
        frontier_path = out_dir / "frontier.png"
        figure.savefig(frontier_path, dpi=120)
        plt.close(figure)
        paths.append(frontier_path)
    return paths
