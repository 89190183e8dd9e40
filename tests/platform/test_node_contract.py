"""The node's records (``powernode.node.records``) and the platform's served OpenAPI agree.

For every node API route the agent calls, the request record and the answer
record are compared with the schema ``/openapi.json`` of the real app states
for that route's body and 200/201 answer: the same field names, the same
required fields, and the same JSON types (string, integer, number, boolean,
array, object, null), recursively through nested records. And a record
refuses a document with an unknown or a missing field, naming it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from typing import Any

import pytest

from powernode.errors import DataError
from powernode.node import records
from powernode.node.records import ANSWERS, REQUESTS, Record
from powernode.oci.digest import Digest
from tests.platform.conftest import Platform

_SCALAR = {str: "string", int: "integer", float: "number", bool: "boolean", datetime: "string"}
_SCALAR[Digest] = "string"


@pytest.fixture
def spec(platform: Platform) -> dict[str, Any]:
    doc: dict[str, Any] = platform.raw("GET", "/openapi.json").json()
    return doc


def _deref(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    return schema


def _json_types(spec: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    schema = _deref(spec, schema)
    if "anyOf" in schema:
        return set().union(*(_json_types(spec, s) for s in schema["anyOf"]))
    if "const" in schema or "enum" in schema:
        return {"string"}
    if "type" in schema:
        return {schema["type"]}
    return {"object"} if "properties" in schema else set()


def _record_types(tp: Any) -> set[str]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if tp == records.JSON:
            return {"string", "integer", "number", "boolean", "array", "object", "null"}
        return set().union(*(_record_types(a) for a in args))
    if tp is type(None):
        return {"null"}
    if origin is list:
        return {"array"}
    if origin is dict or (isinstance(tp, type) and issubclass(tp, Record)):
        return {"object"}
    if origin is typing.Literal:
        return {"string"}
    return {_SCALAR[tp]}


def _compare(spec: dict[str, Any], record: type[Record], schema: dict[str, Any], at: str) -> None:
    schema = _deref(spec, schema)
    props: dict[str, Any] = schema.get("properties", {})
    fields = {f.name: f for f in dataclasses.fields(record)}  # type: ignore[arg-type]
    assert set(fields) == set(props), f"{at}: record {record.__name__} vs schema fields"
    required = {
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required == set(schema.get("required", [])), f"{at}: required fields"
    hints = typing.get_type_hints(record)
    for name, prop in props.items():
        want, got = _record_types(hints[name]), _json_types(spec, prop)
        if "object" in want and not got - {"object", "null"}:
            got |= {"object"}  # dict[str, Any] in pydantic is {"type": "object"} (or no type)
        assert want == got or (not got and "object" in want), f"{at}.{name}: {want} vs {got}"
        inner = _nested(hints[name])
        if inner is not None:
            sub = _deref(spec, prop)
            if "anyOf" in sub:
                sub = next(s for s in sub["anyOf"] if s.get("type") != "null")
            if sub.get("type") == "array":
                sub = sub["items"]
            _compare(spec, inner, sub, f"{at}.{name}")


def _nested(tp: Any) -> type[Record] | None:
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp
    for arg in typing.get_args(tp):
        found = _nested(arg)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_request_record_matches_the_served_schema(spec: dict[str, Any]) -> None:
    for (method, path), record in REQUESTS.items():
        op = spec["paths"][path][method]
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert _deref(spec, schema) == spec["components"]["schemas"][record.schema]
        _compare(spec, record, schema, f"{method.upper()} {path} request")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_answer_record_matches_the_served_schema(spec: dict[str, Any]) -> None:
    for (method, path), record in ANSWERS.items():
        op = spec["paths"][path][method]
        ok = op["responses"].get("200") or op["responses"]["201"]
        schema = ok["content"]["application/json"]["schema"]
        assert "$ref" in schema, f"{method.upper()} {path}: no response model"
        _compare(spec, record, schema, f"{method.upper()} {path} answer")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_node_api_route_has_a_record_and_a_response_model(spec: dict[str, Any]) -> None:
    node_routes = {
        (m, p) for p, ops in spec["paths"].items() if p.startswith("/node_api/") for m in ops
    }
    assert node_routes == set(ANSWERS), "a node API route without a record (or a stale one)"


def test_an_unknown_field_is_refused_by_name() -> None:
    doc = {"accepted": 1, "duplicates": 0, "dropped": 3}
    with pytest.raises(DataError, match=r"EventsAnswer: dropped: unknown field"):
        records.EventsAnswer.from_json(doc)


def test_a_missing_field_is_refused_by_name() -> None:
    with pytest.raises(DataError, match=r"HeartbeatAnswer: server_time: field required"):
        records.HeartbeatAnswer.from_json({})


def test_a_bad_digest_in_a_desired_module_is_refused_with_its_location() -> None:
    entry = {
        "name": "base",
        "version": "1.0.0",
        "composefs_digest": "sha256:xyz",
        "effective_priority": 10,
        "reference": "",
        "trust_policy": None,
        "promotion_state": "live",
        "variety": "regular",
        "assigned": True,
    }
    doc = {
        "instance_id": "i",
        "template": "t",
        "allowed_states": ["live"],
        "modules": [entry],
        "composition": None,
    }
    with pytest.raises(DataError, match=r"modules\.0\.composefs_digest: invalid digest"):
        records.DesiredModules.from_json(doc)
    good = records.DesiredModules.from_json(
        doc | {"modules": [entry | {"composefs_digest": "sha256:" + "a" * 64}]}
    )
    assert good.modules[0].composefs_digest == Digest("sha256", "a" * 64)
    assert records.DesiredModules.from_json(good.to_json()) == good
