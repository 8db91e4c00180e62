"""The request bodies the server accepts, checked field by field before anything reaches the scheduler.

Unknown fields are refused (``extra="forbid"``): a field lmforge does not implement gets a 400 that
names it instead of being silently ignored. Integers are strict (``true`` is not a token count) and
bounded, so a value that would raise deep inside generation (``seed: 2**70``) fails here, alone.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

INT64 = 2**63
Seed = Annotated[StrictInt, Field(ge=-INT64, lt=INT64)]  # what torch.Generator.manual_seed takes
PositiveInt = Annotated[StrictInt, Field(ge=1)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
TokenIds = list[Annotated[StrictInt, Field(ge=0)]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: StrictBool = False


class JsonSchemaFormat(_Strict):
    name: StrictStr = "response"
    description: StrictStr | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class FunctionSpec(_Strict):
    name: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: StrictStr | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: StrictBool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(_Strict):
    name: StrictStr


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class Sampling(_Strict):
    """Fields shared by completions and chat completions."""

    model: StrictStr | None = None
    max_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    top_k: PositiveInt | None = None
    n: Annotated[StrictInt, Field(ge=1, le=8)] = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None = None
    seed: Seed | None = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    user: StrictStr | None = None  # an end-user id: the usage log keeps a hash of it

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value):
        for key in value or {}:
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids; '{key}' is not one")
        return value

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionBody(Sampling):
    prompt: StrictStr | list[StrictStr] | TokenIds | list[TokenIds]
    echo: StrictBool = False
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None

    @property
    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids as sent (lm-eval sends ids)."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(p, int) for p in prompt):
            return [list(prompt)]
        return list(prompt)


class ChatMessage(BaseModel):
    # Messages pass to the chat template as sent (names, tool_calls, tool_call_id...), so extra keys are kept.
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatBody(Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    logprobs: StrictBool = False
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None


class EmbeddingBody(_Strict):
    model: StrictStr | None = None
    input: (StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=64)]
            | Annotated[TokenIds, Field(min_length=1)] | Annotated[list[Annotated[TokenIds, Field(min_length=1)]], Field(min_length=1, max_length=64)])
    encoding_format: Literal["float", "base64"] = "float"
    user: StrictStr | None = None  # an end-user id: the usage log keeps a hash of it


class TokenizeBody(_Strict):
    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: StrictBool = False
