"""The OpenAPI document is whole and true: it validates, every reference resolves, every
/v1 operation declares the request signature, binary routes say their media type, and the
docs page loads its assets from this server, not a CDN."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from he_agg.server.app import create_app
from he_agg.server.config import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder: Path = tmp_path_factory.mktemp("openapi")
    with TestClient(create_app(Settings(data_dir=folder))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_document_validates_and_every_reference_resolves(spec: dict[str, Any]) -> None:
    validate(spec)
    defined = {f"#/components/schemas/{name}" for name in spec["components"]["schemas"]}
    dangling = sorted(set(_refs(spec)) - defined)
    assert dangling == []
    for name in ("FederationCreate", "RoundOpen", "CommitmentIn", "EpochRequest"):
        assert name in spec["components"]["schemas"]


def test_every_v1_operation_declares_the_request_signature(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["he-agg-signature"]
    assert scheme["in"] == "header" and scheme["name"] == "x-he-agg-signature"
    for path, operations in spec["paths"].items():
        if path.startswith("/v1/"):
            for method, operation in operations.items():
                assert operation["security"] == [{"he-agg-signature": []}], (method, path)


def test_binary_responses_name_their_media_type(spec: dict[str, Any]) -> None:
    v1 = "/v1/federations/{federation_id}"
    binary = {
        f"{v1}/public-key": "application/octet-stream",
        f"{v1}/rounds/{{number}}/model": "application/octet-stream",
        f"{v1}/rounds/{{number}}/aggregate": "application/octet-stream",
        f"{v1}/rounds/{{number}}/updates/{{client}}": "application/octet-stream",
        f"{v1}/rosters": "application/json",
        "/metrics": "text/plain",
    }
    for path, media in binary.items():
        content = spec["paths"][path]["get"]["responses"]["200"]["content"]
        assert list(content) == [media], path
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody")
            if body is not None and "application/octet-stream" in body["content"]:
                # a binary body says what format it is in
                assert "he_agg." in body["description"], (method, path)
    upload = spec["paths"][f"{v1}/rounds/{{number}}/updates/{{client}}"]["put"]
    assert "application/octet-stream" in upload["requestBody"]["content"]
    shares = spec["paths"][f"{v1}/rounds/{{number}}/decryption/{{attempt}}/shares/{{member}}"]
    assert "DecryptionShare" in shares["put"]["requestBody"]["description"]


def test_the_docs_page_needs_no_cdn(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "/docs-assets/swagger-ui-bundle.js" in page.text
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000


def test_every_signed_route_documents_its_error_statuses(spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert {"401", "403", "404", "422", "503"} <= documented, (method, path)
            if method in ("put", "post"):  # every route that reads a body
                assert {"408", "413"} <= documented, (method, path)
    upload = spec["paths"]["/v1/federations/{federation_id}/rounds/{number}/updates/{client}"]
    assert {"408", "409", "413"} <= set(upload["put"]["responses"])


def test_every_error_answer_is_documented_as_the_one_field_problem(
    spec: dict[str, Any],
) -> None:
    # the handlers answer every 4xx/5xx as {"detail": text}; FastAPI's HTTPValidationError
    # (detail a list) would be a lie for a 422
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    problem = {"$ref": "#/components/schemas/Problem"}
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == problem, (method, path, code)


def test_json_passed_through_is_documented_as_what_it_is(
    spec: dict[str, Any], client: TestClient
) -> None:
    v1 = "/v1/federations/{federation_id}"
    roster = spec["paths"][f"{v1}/roster"]["get"]["responses"]["200"]["content"]
    assert roster["application/json"]["schema"]["type"] == "object"
    rosters = spec["paths"][f"{v1}/rosters"]["get"]["responses"]["200"]["content"]
    assert rosters["application/json"]["schema"] == {"type": "array", "items": {"type": "string"}}
    metrics = spec["paths"]["/metrics"]["get"]["responses"]
    answer = client.get("/metrics")  # closed by default: an unsigned caller gets 401
    assert answer.status_code == 401 and str(answer.status_code) in metrics
    assert "403" in metrics
