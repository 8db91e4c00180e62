import json

from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.runs import RunStore


def test_explain_writes_html_and_json_and_records_a_run(tiny_folder, tmp_path):
    html, out = tmp_path / "view.html", tmp_path / "explain.json"
    result = CliRunner().invoke(app, ["explain", str(tiny_folder), "Water carries sand to the", "--target", " sea",
                                      "--steps", "16", "--html", str(html), "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [a["method"] for a in report["attributions"]] == ["integrated_gradients", "gradient_x_input"]
    assert report["attention"]["shape"]["layers"] == 2
    assert html.read_text().startswith("<!doctype html>")
    (record,) = RunStore().list(command="explain")
    assert record.status == "ok" and {"html", "json"} <= set(record.artifacts)
