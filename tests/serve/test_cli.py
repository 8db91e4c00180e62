"""`lmforge serve FOLDER` as a user runs it: the command loads through load_model and serves on loopback."""

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.models import save_model
from lmforge.runs import RunStore
from lmforge.errors import LmforgeError
from lmforge.serve import ServerThread, api_keys_from


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
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# one key a line\n\nk\n")
    result = CliRunner().invoke(app, ["serve", str(folder), "--port", "8123", "--api-key-file", str(key_file),
                                      "--name", "tiny"])
    assert result.exit_code == 0, result.output
    assert served["host"] == "127.0.0.1" and served["port"] == 8123  # loopback unless asked
    assert served["reply"]["usage"]["completion_tokens"] == 3 and "serving" in result.output
    assert (tmp_path / "home" / "usage.jsonl").read_text().count("\n") == 1
    (run,) = RunStore(tmp_path / "home" / "runs.sqlite").list()
    assert run.command == "serve" and run.status == "ok" and run.config["api_keys"] == 1  # the count, never the key
    assert b"Bearer k" not in (tmp_path / "home" / "runs.sqlite").read_bytes()

    refused = CliRunner().invoke(app, ["serve", str(folder), "--host", "0.0.0.0"])
    assert "without an API key" in str(refused.exception)


def test_api_keys_come_from_flags_a_file_or_the_environment(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# ops keys\n alpha \n\nbeta\n")
    environ = {"LMFORGE_API_KEYS": "gamma, delta,"}
    assert api_keys_from(None, str(keys), environ) == ("alpha", "beta")
    assert api_keys_from(["x"], str(keys), environ) == ("x", "alpha", "beta")
    assert api_keys_from(None, None, environ) == ("gamma", "delta")  # only when no flag and no file
    assert api_keys_from(["x"], None, environ) == ("x",)
    with pytest.raises(LmforgeError, match="no such file"):
        api_keys_from(None, str(tmp_path / "missing"), environ)
    (tmp_path / "empty").write_text("# nothing\n\n")
    with pytest.raises(LmforgeError, match="holds no key"):
        api_keys_from(None, str(tmp_path / "empty"), environ)
