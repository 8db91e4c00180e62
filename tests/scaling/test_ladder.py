import json

import pytest

from lmforge.errors import LmforgeError
from lmforge.scaling import Rung, fit_ladder, parse_size, plot_ladder
from lmforge.scaling.fit import ScalingLaw
from lmforge.train import ModelConfig
from lmforge.workflows.scale import ladder_model

LAW = ScalingLaw(E=2.0, A=60.0, B=300.0, alpha=0.35, beta=0.4)


def test_fit_ladder_predicts_the_held_out_rung_and_plots(tmp_path):
    rungs = []
    for n in (2e4, 6e4, 2e5, 4e5):
        for d in (1.3e5, 2.6e5, 5.2e5):
            rungs.append(Rung(width=0, layers=0, tokens=int(d), non_embedding_params=int(n),
                              eval_loss=float(LAW.predict(n, d))))
    rungs.append(Rung(width=0, layers=0, tokens=524288, non_embedding_params=1_200_000,
                      eval_loss=float(LAW.predict(1.2e6, 524288)), held_out=True))
    result = fit_ladder(rungs, flop_budget=1e15, bootstrap=0, starts=4)
    assert result.relative_error == pytest.approx(0, abs=2e-3)
    n_opt, d_opt = result.compute_optimal["n_params"], result.compute_optimal["tokens"]
    assert 6 * n_opt * d_opt == pytest.approx(1e15)
    paths = plot_ladder(result, tmp_path)
    assert {p.name for p in paths} == {"fit.png", "frontier.png"} and all(p.stat().st_size > 10_000 for p in paths)
    json.dumps(result.to_dict())


def test_ladder_shapes_and_bad_sizes():
    model = ladder_model(96, 4, ModelConfig(vocab_size=2048))
    assert (model.heads, model.intermediate_size) == (3, 256)
    assert parse_size("64x4") == (64, 4)
    with pytest.raises(LmforgeError, match="WIDTHxLAYERS"):
        parse_size("64-4")
    with pytest.raises(LmforgeError, match="multiple of 16"):
        ladder_model(40, 2, ModelConfig())


def test_an_unidentified_irreducible_loss_is_flagged():
    law = ScalingLaw(E=0.0, A=20.0, B=30.0, alpha=0.3, beta=0.2)
    rungs = [Rung(width=0, layers=0, tokens=int(d), non_embedding_params=int(n), eval_loss=float(law.predict(n, d)))
             for n in (1e4, 3e4, 1e5) for d in (1e4, 3e4, 1e5)]
    result = fit_ladder(rungs, bootstrap=0, starts=2)
    assert result.warnings and "too short" in result.warnings[0]
