"""The error responses each kind of route documents in the OpenAPI schema."""

from __future__ import annotations

from litestar.openapi.datastructures import ResponseSpec

from tally.http.models import Problem
from tally.http.problems import PROBLEM_JSON


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        media_type=PROBLEM_JSON,
        description=description,
        generate_examples=False,
    )


_AUTH = {
    401: _problem("No API key, or an unknown or revoked one."),
    403: _problem("The key lacks the scope this route needs."),
}
_BAD = {400: _problem("Malformed request, refused before any rule ran; see `code` and `field`.")}

READ_RESPONSES = {**_BAD, **_AUTH, 404: _problem("No such thing in the key's ledger.")}
WRITE_RESPONSES = {
    **READ_RESPONSES,
    409: _problem(
        "The Idempotency-Key is in flight, a business key was used already (an order, a "
        "gateway payment, a refund request, a hold id), or the hold is settled or expired."
    ),
    413: _problem("The body is over 64 KiB; refused unread."),
    415: _problem("The body is not application/json."),
    422: _problem("Refused by the ledger's rules, or the key was used for another request."),
    503: _problem("Not recorded (storage failed); retry with the same Idempotency-Key."),
}
