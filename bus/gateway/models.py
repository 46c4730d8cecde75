"""Request and response bodies of the gateway API; the OpenAPI document is built from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

MAX_BATCH = 500
#: the longest a mailbox read waits for a first delivery (long polling), in seconds
MAX_WAIT_S = 10


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldProblem(Body):
    """One failing field: its path and a code; never the value sent."""

    field: str = Field(description="dotted path of the field ('$' for the whole body)")
    code: str = Field(description="machine-readable reason, e.g. missing, unknown_event_type, signer_not_source")
    message: str = Field(description="what is wrong, without the value")


class Problem(Body):
    """RFC 9457 problem details (application/problem+json)."""

    type: str = Field(description="URI naming the problem type")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    code: str = Field(description="machine-readable reason")
    errors: list[FieldProblem] = Field(default_factory=list)


class Receipt(Body):
    """Proof the gateway handed an event to the bus (MESH: the message id and its receipt)."""

    event_id: UUID
    topic: str = Field(description="the ingress topic of the publisher's agency")
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    received_at: datetime


class BatchRequest(Body):
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH,
                                         description="signed events, as for POST /v1/events")


class BatchItem(Body):
    index: int = Field(ge=0, description="position of the event in the request")
    status: int = Field(description="the status a single POST /v1/events would have given")
    receipt: Receipt | None = None
    problem: Problem | None = None


class BatchResult(Body):
    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    results: list[BatchItem]


class MailboxItem(Body):
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    delivered_at: datetime
    event: dict[str, Any] = Field(description="the delivered view: only what the agreement lets this partner see")


class MailboxPage(Body):
    items: list[MailboxItem]
    cursor: str = Field(description="pass as `after` for the next page, and to /v1/mailbox/ack once stored")
    more: bool = Field(description="true when further deliveries were already waiting")


class AckRequest(Body):
    cursor: str = Field(min_length=1, max_length=2048)


class AckResult(Body):
    cursor: str
    advanced: bool = Field(description="false when this cursor was already acknowledged (or behind one that was)")


class DeadLetterReason(Body):
    field: str
    code: str


class EventStatus(Body):
    """What happened to an event the caller published (MESH tracking)."""

    event_id: UUID
    state: Literal["received", "ingested", "dead_lettered"] = Field(
        description="received: handed to the bus, not processed yet; ingested: checked and decided; "
                    "dead_lettered: refused by the bus (see reasons)")
    received_at: datetime
    shared_with: int = Field(ge=0, description="how many partners it was shared with")
    recipients: list[str] | None = Field(
        default=None, description="who, only for shares under agreements that let the publisher know")
    reasons: list[DeadLetterReason] = Field(default_factory=list)


class Health(Body):
    status: Literal["ok", "degraded"]
    kafka: bool
