"""The Ray engine against a local Ray instance: same steps, same output as the local engine."""

import pytest

from lmforge.data.curate import Pipeline

ray = pytest.importorskip("ray", reason="the Ray engine needs `pip install 'lmforge[ray]'`")

from test_curate_pipeline import config, corpus, read_outputs  # noqa: E402,F401  (same fixture and config)


@pytest.mark.slow
def test_ray_engine_matches_local_engine(corpus, tmp_path):  # noqa: F811
    local = Pipeline.from_dict(config(corpus, tmp_path / "local")).run(engine="local", workers=1)
    on_ray = Pipeline.from_dict(config(corpus, tmp_path / "ray")).run(engine="ray", workers=2)
    assert read_outputs(tmp_path / "ray") == read_outputs(tmp_path / "local")
    assert on_ray["steps"] == {k: {**v, "seconds": on_ray["steps"][k]["seconds"]} for k, v in local["steps"].items()}
