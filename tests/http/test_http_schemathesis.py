"""Schemathesis against /openapi.json: generated requests, positive and negative, never get
a 5xx, and every answer matches the documented status, content type and schema."""

from __future__ import annotations

import os
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytest_plugins = ["http_fixtures"]

EXAMPLES_PER_OPERATION = int(os.environ.get("TALLY_SCHEMATHESIS_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_honours_its_schema(live: Any, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    loaded = list(schema.get_all_operations())
    operations = [result.ok() for result in loaded if isinstance(result, Ok)]
    assert len(operations) == len(loaded)  # every operation's schema is valid
    assert len(operations) >= 10
    headers = {"Authorization": f"Bearer {live.keys['admin']}"}
    statuses: list[int] = []
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.path == "/healthz":
            continue  # nothing to negate: it takes no input at all

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        def check(case: Any) -> None:
            response = case.call_and_validate(base_url=live.url, headers=headers, checks=CHECKS)
            statuses.append(response.status_code)

        check()
    assert len(statuses) >= len(operations)
    if mode is GenerationMode.POSITIVE:
        assert {200, 201} & set(statuses)  # not everything bounced off validation
    else:
        assert {400, 413, 415, 422} & set(statuses)  # invalid input was generated and refused
