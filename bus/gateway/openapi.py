"""The gateway's OpenAPI 3.1 document, built from the same pydantic models the handlers use
(and the event catalogue's); committed as schemas/openapi.json, a test fails if it is stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from bus.gateway.models import (
    MAX_BATCH,
    MAX_WAIT_S,
    AckRequest,
    AckResult,
    BatchRequest,
    BatchResult,
    EventStatus,
    Health,
    MailboxPage,
    Problem,
    Receipt,
)
from schemas.registry import _ADAPTER, MAX_EVENT_BYTES

REF = "#/components/schemas/{model}"
COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _problem(description: str, retry: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/problem+json": {"schema": _ref("Problem")}}}
    if retry:
        out["headers"] = {"Retry-After": {"description": "seconds to wait before retrying",
                                          "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    return out


#: the HTTP server's own refusal of a malformed request (e.g. a request line over 8 KiB), before any handler
_MALFORMED = {"description": "a malformed request", "content": {
    "application/problem+json": {"schema": _ref("Problem")}, "text/plain": {"schema": {"type": "string"}}}}
_AUTH = {"401": _problem("no partner client certificate, or one not registered to a partner (or revoked)")}
_LIMITS = {"413": _problem("the body is over the size limit"),
           "415": _problem("the body is not application/json"),
           "429": _problem("over the partner's rate limit", retry=True),
           "503": _problem("the bus or the policy data is unavailable now; nothing was published", retry=True)}


_READS_LIMIT = _problem("over the partner's rate of reads, or another call on its mailbox is in progress "
                        "(mailbox_busy)", retry=True)


def _ok(description: str, schema: str, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}}


def _schemas() -> dict[str, Any]:
    _, models = models_json_schema(
        [(m, "serialization") for m in (Problem, Receipt, BatchResult, MailboxPage, AckResult, EventStatus, Health)]
        + [(m, "validation") for m in (BatchRequest, AckRequest)], ref_template=REF)
    schemas: dict[str, Any] = dict(models.get("$defs", {}))
    event = _ADAPTER.json_schema(ref_template=REF)
    for name, definition in event.pop("$defs", {}).items():
        if name in schemas and schemas[name] != definition:
            raise ValueError(f"an event schema and a gateway model are both called {name}")
        schemas[name] = definition
    event["description"] = ("One signed event of the catalogue (schemas/json/), as a partner's Kafka client "
                            f"would publish it; at most {MAX_EVENT_BYTES} bytes.")
    schemas["Event"] = event
    # Items are any objects here: each is checked as an Event on its own and gets its own result.
    schemas["BatchRequest"]["properties"]["events"]["items"]["description"] = (
        "an Event (#/components/schemas/Event); each is checked on its own")
    return dict(sorted(schemas.items()))


def build_openapi() -> dict[str, Any]:
    uuid_param = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    paths: dict[str, Any] = {
        "/healthz": {"get": {
            "operationId": "healthz", "summary": "Liveness (no authentication)", "security": [],
            "responses": _ok("the gateway is up; `kafka` says whether the bus answers", "Health")}},
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document (no authentication)", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                "schema": {"type": "object"}}}}}}},
        "/v1/events": {"post": {
            "operationId": "publishEvent", "summary": "Publish one signed event of the caller's organisation",
            "description": "The same validation and signature checks as the bus; idempotent on event_id (a retry "
                           "of the same event returns the first receipt).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Event")}}},
            "responses": {**_ok("handed to the bus", "Receipt", "202"),
                          "400": _problem("the body is not JSON"), **_AUTH,
                          "403": _problem("the event is another organisation's, or not signed by the caller's key"),
                          "409": _problem("another event with this id was published"),
                          "422": _problem("the event is invalid (each failing field named, never its value)"),
                          **_LIMITS}}},
        "/v1/events:batch": {"post": {
            "operationId": "publishEvents", "summary": f"Publish up to {MAX_BATCH} events",
            "description": "Each event is checked and published on its own; each result has the status a "
                           "single publish would have given.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BatchRequest")}}},
            "responses": {**_ok("every event was tried (see each result)", "BatchResult"), **_AUTH,
                          "422": _problem("the batch itself is invalid"), **_LIMITS}}},
        "/v1/events/{event_id}/status": {"get": {
            "operationId": "eventStatus", "summary": "What became of an event the caller published",
            "parameters": [uuid_param],
            "responses": {**_ok("the event's status", "EventStatus"), **_AUTH,
                          "404": _problem("no such event was published by the caller through the gateway"),
                          "422": _problem("the event id is not a UUID"), "429": _READS_LIMIT,
                          "503": _LIMITS["503"]}}},
        "/v1/mailbox": {"get": {
            "operationId": "readMailbox", "summary": "The caller's deliveries, in order, from a cursor",
            "description": "Without `after`, from the last acknowledged cursor: deliveries come back until "
                           "acknowledged.",
            "parameters": [
                {"name": "after", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 2048},
                 "description": "a cursor from an earlier page"},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": 100}},
                {"name": "wait", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
                 "description": "seconds to wait for a delivery when none is waiting"}],
            "responses": {**_ok("a page of deliveries", "MailboxPage"), **_AUTH,
                          "422": _problem("a parameter or the cursor is invalid"),
                          "429": _READS_LIMIT, "503": _LIMITS["503"]}}},
        "/v1/mailbox/ack": {"post": {
            "operationId": "ackMailbox", "summary": "Acknowledge every delivery up to a cursor",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("AckRequest")}}},
            "responses": {**_ok("acknowledged", "AckResult"), **_AUTH,
                          "422": _problem("the body or the cursor is invalid"),
                          **_LIMITS, "429": _READS_LIMIT}}},
    }
    for ops in paths.values():
        for op in ops.values():
            op["responses"].setdefault("400", _MALFORMED)
            op["responses"] = dict(sorted(op["responses"].items()))
    return {
        "openapi": "3.1.0",
        "info": {"title": "sgbus gateway", "version": "1.0.0",
                 "description": "The HTTPS front door of sgbus for partner systems that run no Kafka client. "
                                "Every request but /healthz and this document is authenticated by a client "
                                "certificate issued by the partnership CA (`sgbus partners certs issue`)."},
        "servers": [{"url": "https://127.0.0.1:8443", "description": "the local stack (`sgbus gateway`)"}],
        "security": [{"partnerCertificate": []}],
        "paths": paths,
        "components": {"schemas": _schemas(), "securitySchemes": {"partnerCertificate": {
            "type": "mutualTLS", "description": "a client certificate from `sgbus partners certs issue PARTNER_ID`"}}},
    }


def render() -> str:
    return json.dumps(build_openapi(), indent=2, sort_keys=False) + "\n"
