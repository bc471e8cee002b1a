"""The HTTP API's contract: the request and response models that /openapi.json publishes,
checked strictly, and how a request's decoder settings merge with the server's defaults."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from torchtutor.chat.infer.chatbot import Reply, notices
from torchtutor.chat.infer.options import (
    LENGTH_BONUS_RANGE,
    LENGTH_PENALTY_RANGE,
    MAX_BEAM,
    MAX_CANDIDATES,
    MAX_MIN_LENGTH,
    MAX_NO_REPEAT,
    MAX_SEED,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_TEMPERATURE,
    MMI_WEIGHT_RANGE,
    REPETITION_PENALTY_RANGE,
    DecodeOptions,
    resolve_options,
)
from torchtutor.runtime.errors import UserError

log = logging.getLogger(__name__)


MAX_TEXT_CHARS = 1000
# The page may only load its own files; nothing inline, nothing from elsewhere.


OPTION_CONFLICT = "option_conflict"


def _whole_float_as_int(value: object) -> object:
    # JSON Schema counts 5.0 as an integer, and clients may send one; strict pydantic would not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Last in an integer field's annotations (after its bounds, so that they stay in the schema):
# a JSON number without a fractional part, never a bool or a string.


WHOLE = BeforeValidator(_whole_float_as_int)


class ReplyRequest(BaseModel):
    """One message, and optionally decoder settings that override the server's defaults.

    Strict, so that the server accepts exactly what the schema describes: no `true` for 1, no
    "5" for 5, no 2.5 for an integer, no NaN. The bounds are the CLI's (chat/infer/options.py);
    only combinations of fields are checked later (`merge_options`).
    """
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS,
                               description="what the user said")]
    decoder: Literal["greedy", "beam", "sample"] | None = None
    beam_size: Annotated[int, Field(ge=1, le=MAX_BEAM), WHOLE] | None = None
    length_penalty: Annotated[float, Field(ge=LENGTH_PENALTY_RANGE[0],
                                           le=LENGTH_PENALTY_RANGE[1])] | None = None
    n_best: Annotated[int, Field(ge=1, le=MAX_BEAM + MAX_CANDIDATES), WHOLE] | None = None
    temperature: Annotated[float, Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)] | None = None
    top_k: Annotated[int, Field(ge=0, le=MAX_TOP_K), WHOLE] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    no_repeat_ngram: Annotated[int, Field(ge=0, le=MAX_NO_REPEAT), WHOLE] | None = None
    seed: Annotated[int, Field(ge=0, le=MAX_SEED), WHOLE] | None = None
    rerank: Literal["none", "mmi"] | None = None
    mmi_weight: Annotated[float, Field(ge=MMI_WEIGHT_RANGE[0],
                                       le=MMI_WEIGHT_RANGE[1])] | None = None
    length_bonus: Annotated[float, Field(ge=LENGTH_BONUS_RANGE[0],
                                         le=LENGTH_BONUS_RANGE[1])] | None = None
    candidates: Annotated[int, Field(ge=0, le=MAX_CANDIDATES), WHOLE] | None = None
    min_length: Annotated[int, Field(ge=0, le=MAX_MIN_LENGTH), WHOLE] | None = None
    repetition_penalty: Annotated[float, Field(ge=REPETITION_PENALTY_RANGE[0],
                                               le=REPETITION_PENALTY_RANGE[1])] | None = None
    no_repeat_token: bool | None = None
    no_copy_ngram: Annotated[int, Field(ge=0, le=MAX_NO_REPEAT), WHOLE] | None = None


class Alternative(BaseModel):
    text: str
    score: float


class ReplyResponse(BaseModel):
    reply: str
    unknown_words: list[str]
    truncated: bool
    empty: bool = False
    score: float = 0.0
    notices: list[str] = []
    alternatives: list[Alternative] = []


class ErrorResponse(BaseModel):
    """Every error answer: one line saying what was wrong."""
    message: str


class Problem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str = Field(description=f"pydantic's error type, or {OPTION_CONFLICT!r}: fields "
                                  "valid one by one that do not go together (or need what "
                                  "this server's run lacks)")


class InvalidRequest(ErrorResponse):
    detail: list[Problem] = []


# Answers any request may get from the guards around the routes (BodySizeLimit,
# guarded_protocol) or from the server's state, whatever its path.
GUARD_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse,
          "description": "body not UTF-8, JSON nested too deeply, or a body that cannot be read"},
    408: {"model": ErrorResponse, "description": "request not received whole in time"},
    413: {"model": ErrorResponse, "description": "body too large"},
    503: {"model": ErrorResponse,
          "description": "too many open connections, queue full, or shutting down"},
}


# Request field -> DecodeOptions field, where the names differ (they follow the CLI's flags).
_OPTION_NAMES = {"decoder": "method"}
API_NAMES = {option: field for field, option in _OPTION_NAMES.items()}


def merge_options(defaults: DecodeOptions, request: ReplyRequest,
                  has_backward: bool = True) -> DecodeOptions:
    """The server's defaults with the request's own settings on top; checked as a whole
    (a request that names a decoder without `rerank` gets that decoder alone)."""
    given = request.model_dump(exclude={"text"}, exclude_none=True)
    try:
        return resolve_options({_OPTION_NAMES.get(k, k): v for k, v in given.items()},
                               has_backward, defaults)
    except UserError as exc:
        # The checks speak in flags ("--n-best 3 is more than ..."); the API in field names.
        message = re.sub(r"--([a-z0-9-]+)", lambda m: m.group(1).replace("-", "_"), str(exc))
        field = message.split(" ", 1)[0]
        field = field if field in ReplyRequest.model_fields else "body"
        raise RequestValidationError([{"loc": ("body", field), "type": OPTION_CONFLICT,
                                       "msg": message.removeprefix(field).strip()}]) from None


def as_response(reply: Reply, has_unk: bool) -> ReplyResponse:
    return ReplyResponse(
        reply=reply.text, unknown_words=list(reply.unknown_words), truncated=reply.truncated,
        empty=reply.empty, score=reply.score, notices=notices(reply, has_unk),
        alternatives=[Alternative(text=t, score=s) for t, s in reply.alternatives])
