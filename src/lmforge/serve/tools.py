"""Chat prompts with tools: the model's chat template, tool descriptions, and tool calls parsed back out.

A template that takes ``tools`` (Qwen, Llama 3.1, Hermes...) renders them itself. One that does not
(SmolLM2's) gets them as a system message in the Hermes convention most small open models are tuned
on: the function signatures as JSON, and calls written as ``<tool_call>{"name": ..., "arguments":
...}</tool_call>``. When the client forces a call (``tool_choice`` "required" or a named function) the
reply is constrained to that JSON shape by the grammar, so it always parses.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def message_text(content: Any) -> str:
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    """A message as a template without tool support can render it: text content only."""
    role, text = message["role"], message_text(message.get("content"))
    if message.get("tool_calls"):
        text += "".join(f"<tool_call>{json.dumps(call.get('function', call))}</tool_call>"
                        for call in message["tool_calls"])
    if role == "tool":
        return {"role": "user", "content": f"<tool_response>{text}</tool_response>"}
    return {"role": "system" if role == "developer" else role, "content": text}


def tools_system_text(tools: list[dict[str, Any]]) -> str:
    signatures = "\n".join(json.dumps(tool["function"]) for tool in tools)
    return ("You may call functions. Their signatures:\n<tools>\n" + signatures + "\n</tools>\n"
            "To call one, reply with <tool_call>{\"name\": <function name>, \"arguments\": <arguments object>}"
            "</tool_call>.")


def chat_prompt(tokenizer, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
    """The prompt text for a conversation (and its tools), with the generation prompt for the assistant."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if tools and "tools" in template:
        return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    plain = [_plain(m) for m in messages]
    if tools:
        if plain[0]["role"] == "system":
            plain[0] = {"role": "system", "content": plain[0]["content"] + "\n\n" + tools_system_text(tools)}
        else:
            plain.insert(0, {"role": "system", "content": tools_system_text(tools)})
    if template:
        return tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
    return "".join(f"{m['role']}: {m['content']}\n" for m in plain) + "assistant:"


def call_schema(tools: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    """The JSON schema of one call: to the named function, or to any of them ('required')."""
    chosen = [t["function"] for t in tools if name is None or t["function"]["name"] == name]
    options = [{"type": "object", "properties": {"name": {"const": f["name"]},
                                                  "arguments": f.get("parameters") or {"type": "object"}},
                "required": ["name", "arguments"], "additionalProperties": False} for f in chosen]
    return options[0] if len(options) == 1 else {"anyOf": options}


def tool_call(name: str, arguments: Any) -> dict[str, Any]:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def parse_tool_calls(text: str, tools: list[dict[str, Any]], forced: bool) -> tuple[str | None, list[dict]]:
    """(remaining content, tool calls). A forced reply is one bare call; otherwise <tool_call> blocks, if any."""
    names = {t["function"]["name"] for t in tools}
    blocks = [text] if forced else _CALL.findall(text)
    calls = []
    for block in blocks:
        try:
            call = json.loads(block)
        except json.JSONDecodeError:
            continue
        if isinstance(call, dict) and call.get("name") in names:
            calls.append(tool_call(call["name"], call.get("arguments", {})))
    if forced or not calls:
        return (None if calls else text), calls
    return (_CALL.sub("", text).strip() or None), calls
