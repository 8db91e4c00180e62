"""``response_format`` json_schema on SmolLM2 through `lmforge serve`: valid JSON for the schema on every prompt.

Twenty questions from ARC-Easy go to ``/v1/chat/completions`` (the openai client, greedy) with a schema
asking for the answer's letter, a confidence and a one-line reason; each reply is parsed and checked
with ``jsonschema``. Unconstrained replies to the same prompts (asked to answer in that JSON) are
checked the same way, to show what the grammar changes.

    flock /tmp/lmforge-heavy.lock nice env LMFORGE_DATA_DIR=/work/shared/data PYTHONPATH=src:benchmarks \\
        .venv/bin/python benchmarks/serve_structured.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = {"type": "object", "properties": {
    "answer": {"enum": ["A", "B", "C", "D"]},
    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    "reason": {"type": "string", "maxLength": 120}},
    "required": ["answer", "confidence", "reason"], "additionalProperties": False}


def valid(text: str) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), SCHEMA)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_structured.json"))
    args = parser.parse_args()

    import openai
    import torch

    from lmforge.cli.common import print_table, save_json
    from lmforge.evaluate import load_task
    from lmforge.models import load_model, zoo_path
    from lmforge.paths import data_dir
    from lmforge.serve import ServeConfig, ServerThread, create_app

    torch.set_num_threads(args.threads)
    spec = load_task("arc_easy")
    questions = [spec.render(doc) for doc, _ in zip(spec.documents(None), range(args.prompts))]
    model, tokenizer = load_model(args.model)
    app = create_app(model, tokenizer, ServeConfig(model_name="bench", rate_per_minute=1e6))
    replies = []
    with ServerThread(app) as server:
        api = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=600)
        for text, choices, _ in questions:
            letters = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(choices))
            content = (f"{text.removeprefix('Question: ').removesuffix(chr(10) + 'Answer:')}\n{letters}\n"
                       'Reply in JSON: {"answer": letter, "confidence": 0-1, "reason": short text}.')
            messages = [{"role": "user", "content": content}]
            common = dict(model="bench", messages=messages, max_tokens=96, temperature=0)
            constrained = api.chat.completions.create(**common, response_format={
                "type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}).choices[0]
            free = api.chat.completions.create(**common).choices[0]
            replies.append({"constrained": constrained.message.content, "finish": constrained.finish_reason,
                            "unconstrained": free.message.content})
    ok = sum(valid(r["constrained"]) for r in replies)
    free_ok = sum(valid(r["unconstrained"]) for r in replies)
    print_table(f"json_schema on {args.model}, {len(replies)} ARC-Easy prompts, greedy",
                ["response_format", "valid for the schema"], [("json_schema", f"{ok}/{len(replies)}"),
                                                              ("none (asked in the prompt)", f"{free_ok}/{len(replies)}")])
    save_json(args.out, {"schema": SCHEMA, "valid_constrained": ok, "valid_unconstrained": free_ok,
                         "prompts": len(replies), "replies": replies,
                         "provenance": provenance(models=[zoo_path(args.model)],
                                                  data=[data_dir() / "arc_easy" / "test.jsonl"])})


if __name__ == "__main__":
    main()
