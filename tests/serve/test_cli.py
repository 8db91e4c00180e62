"""`lmforge serve FOLDER` as a user runs it: the command loads through load_model and serves on loopback."""

import httpx
import uvicorn
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.models import save_model
from lmforge.runs import RunStore
from lmforge.serve import ServerThread


def test_serve_command_loads_a_saved_model_and_answers(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    folder = save_model(model, tokenizer, tmp_path / "tiny-model")
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    served = {}

    def run_in_thread(asgi_app, host, port, log_level):  # stands in for uvicorn.run's blocking loop
        served.update(host=host, port=port)
        with ServerThread(asgi_app) as server:
            reply = httpx.post(f"{server.base_url}/completions", headers={"Authorization": "Bearer k"}, timeout=30,
                               json={"model": "tiny", "prompt": "The quick", "max_tokens": 3, "temperature": 0})
            served["reply"] = reply.json()

    monkeypatch.setattr(uvicorn, "run", run_in_thread)
    result = CliRunner().invoke(app, ["serve", str(folder), "--port", "8123", "--api-key", "k", "--name", "tiny"])
    assert result.exit_code == 0, result.output
    assert served["host"] == "127.0.0.1" and served["port"] == 8123  # loopback unless asked
    assert served["reply"]["usage"]["completion_tokens"] == 3 and "serving" in result.output
    assert (tmp_path / "home" / "usage.jsonl").read_text().count("\n") == 1
    (run,) = RunStore(tmp_path / "home" / "runs.sqlite").list()
    assert run.command == "serve" and run.status == "ok" and run.config["api_keys"] == 1  # the count, never the key

    refused = CliRunner().invoke(app, ["serve", str(folder), "--host", "0.0.0.0"])
    assert "without an API key" in str(refused.exception)
