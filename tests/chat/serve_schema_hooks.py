"""schemathesis checks for `chat serve`'s API, loaded with SCHEMATHESIS_HOOKS=<this file>.

    SCHEMATHESIS_HOOKS=tests/chat/serve_schema_hooks.py st run URL/openapi.json \\
        --checks all --exclude-checks positive_data_acceptance

`positive_data_acceptance` takes every refusal of a request the schema allows for a bug. This
API has rules between fields that JSON Schema cannot state (n_best no more than the candidates
the decoder makes, say), and answers a request breaking one with 422 whose problems are all
of type `option_conflict`. `schema_valid_request_accepted` runs the built-in check and lets
exactly that refusal through; anything else (a bound that differs from the schema's, a type
check stricter than the schema) still fails. `every_operation_answers` keeps a server that
refused everything as a conflict from passing.
"""

from __future__ import annotations

import json

import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

from torchtutor.chat.serve.app import OPTION_CONFLICT


def _only_option_conflicts(body: bytes) -> bool:
    try:
        problems = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(problems) and all(isinstance(p, dict) and p.get("type") == OPTION_CONFLICT
                                  for p in problems)


@schemathesis.check
def schema_valid_request_accepted(ctx: CheckContext, response: Response,
                                  case: Case) -> None:
    """positive_data_acceptance, but for a 422 made only of option conflicts."""
    try:
        positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code != 422 or not _only_option_conflicts(response.content):
            raise


@schemathesis.check
class every_operation_answers:  # noqa: N801 - the check's name, as schemathesis reports it
    """Fails the run if an operation it tested never answered 2xx."""

    def __init__(self) -> None:
        self.tested: set[str] = set()
        self.answered: set[str] = set()

    def after_response(self, ctx: CheckContext, response: Response, case: Case) -> None:
        self.tested.add(case.operation.label)
        if 200 <= response.status_code < 300:
            self.answered.add(case.operation.label)

    def after_run(self, ctx: CheckContext) -> None:
        never = self.tested - self.answered
        if never:
            raise AssertionError("never answered 2xx: " + ", ".join(sorted(never)))
