"""What every inbound connector shares: a partner's own file in, canonical events (or a
rejection per bad record, naming the field but never the value) out."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from bus.exceptions import SgbusError
from schemas.envelope import Agency
from schemas.registry import InvalidEvent, parse_event_dict

#: event ids are uuid5 of the connector, the organisation and the source record's own
#: identifiers, so the same record converted twice (a re-delivered file) has the same id
_EVENT_IDS = uuid.UUID("0b7d3a52-6c1e-5f4a-9d2b-8e3f1a6c5d70")
#: local time of English source systems that give a date or a time without a zone
LONDON = ZoneInfo("Europe/London")


class FileRejected(SgbusError):
    """The file as a whole cannot be read (not XML, wrong root, not FHIR, no header)."""


@dataclass(frozen=True)
class Rejection:
    """One bad record: where it is, which field, what is wrong; never the value."""

    path: Path
    where: str  # "record 3" or "line 4"
    field: str
    message: str
    code: str

    def __str__(self) -> str:
        return self.describe(str(self.path))

    def describe(self, file: str) -> str:
        """The report line, with the file named as the caller chooses (a digest, or its path)."""
        return f"{file}: {self.where}: {self.field}: {self.message} [{self.code}]"


@dataclass(frozen=True)
class Converted:
    """A canonical event (a dict the bus accepts) made from one source record."""

    where: str
    event: dict[str, Any]


@dataclass(frozen=True)
class Context:
    """What a conversion needs beyond the file: who publishes, and when it is."""

    org_id: str
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: partnership thresholds etc. for connectors that decide whether to emit (school-sessions)
    settings: dict[str, Any] = field(default_factory=dict)


class RecordError(ValueError):
    """Raised inside a connector's mapping of one record: becomes that record's Rejection."""

    def __init__(self, field: str, message: str, code: str) -> None:
        super().__init__(f"{field}: {message} [{code}]")
        self.field, self.message, self.code = field, message, code


class Connector(ABC):
    """An inbound connector: reads one file format, yields canonical events of one agency."""

    name: ClassVar[str]
    agency: ClassVar[Agency]
    #: every agency whose organisations may run it (most connectors: just `agency`)
    agencies: ClassVar[tuple[Agency, ...]] = ()
    summary: ClassVar[str]

    @classmethod
    def publishers(cls) -> tuple[Agency, ...]:
        return cls.agencies or (cls.agency,)

    @abstractmethod
    def records(self, path: Path, ctx: Context) -> Iterator[tuple[str, Any]]:
        """(where, record) for each source record; raises FileRejected for an unreadable file."""

    @abstractmethod
    def to_events(self, record: Any, ctx: Context) -> list[dict[str, Any]]:
        """The canonical events one record becomes (maybe none); RecordError for a bad record."""

    def convert(self, path: Path, ctx: Context) -> Iterator[Converted | Rejection]:
        """Every event of the file, each checked as the bus will check it; bad records are
        rejected one by one and the rest go through. Nothing a file holds makes this raise
        anything but FileRejected (and no message repeats a value from the file)."""
        seen: set[str] = set()
        records = self.records(path, ctx)
        while True:
            try:
                where, record = next(records)
            except StopIteration:
                return
            except FileRejected:
                raise
            except Exception as exc:  # the file's structure broke the reader: the file, not a record
                raise FileRejected(f"cannot be read ({type(exc).__name__})") from None
            try:
                events = self.to_events(record, ctx)
            except RecordError as exc:
                yield Rejection(path, where, exc.field, exc.message, exc.code)
                continue
            except Exception as exc:  # a value of an unexpected type or size: this record only
                yield Rejection(path, where, "$", f"cannot be read ({type(exc).__name__})", "unreadable_record")
                continue
            for event in events:
                try:
                    parse_event_dict(event)
                except InvalidEvent as exc:
                    first = exc.problems[0]
                    yield Rejection(path, where, first.field, first.message, first.code)
                    continue
                if event["event_id"] in seen:  # two records with the same identifiers: never drop one silently
                    yield Rejection(path, where, "$", "gives the same event id as an earlier record (its source "
                                    "identifiers repeat)", "duplicate_record")
                    continue
                seen.add(event["event_id"])
                yield Converted(where, event)


def read_json(path: Path) -> Any:
    """A JSON file's content; FileRejected if it is not JSON."""
    import json

    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise FileRejected("not JSON") from None


def event_id(connector: str, org_id: str, *parts: object) -> str:
    return str(uuid.uuid5(_EVENT_IDS, "/".join([connector, org_id, *(str(p) for p in parts)])))


def envelope(*, connector: str, key: tuple[object, ...], event_type: str, agency: Agency, ctx: Context,
             subject: dict[str, Any], payload: dict[str, Any], occurred_at: datetime) -> dict[str, Any]:
    """A canonical event: the id from the source record's identifiers (`key`), recorded now."""
    return {
        "event_id": event_id(connector, ctx.org_id, event_type.rsplit(".", 1)[0], *key),
        "event_type": event_type,
        "source": {"agency": agency.value, "org_id": ctx.org_id},
        "occurred_at": occurred_at.isoformat(),
        "recorded_at": max(ctx.now, occurred_at).isoformat(),
        "subject": {k: v for k, v in subject.items() if v not in (None, {}, "")},
        "classification": "OFFICIAL-SENSITIVE",
        "payload": {k: v for k, v in payload.items() if v is not None},
    }


def start_of(day: date) -> datetime:
    """A source date as the start of that day in England."""
    return datetime.combine(day, time(0, 0), LONDON)


def _present(value: object, field_name: str, required: bool, wrong: tuple[str, str]) -> str | None:
    """A source value as stripped text: None when absent (RecordError if required), and a
    RecordError (`wrong` = message, code) when the file holds something other than text."""
    if value is not None and not isinstance(value, str):
        raise RecordError(field_name, *wrong)
    if value is None or not value.strip():
        if required:
            raise RecordError(field_name, "is required", "missing")
        return None
    return value.strip()


def parse_date(value: str | None, field_name: str, *, formats: tuple[str, ...] = ("%Y-%m-%d",),
               required: bool = True) -> date | None:
    """A date in one of the source's formats, or a RecordError naming the field."""
    text = _present(value, field_name, required, ("not a date", "invalid_date"))
    if text is None:
        return None
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise RecordError(field_name, f"not a date in the form {' or '.join(formats)}", "invalid_date")


def parse_datetime(value: str | None, field_name: str, *, required: bool = True) -> datetime | None:
    """An ISO 8601 date-time; a time without a zone is taken as England's local time."""
    text = _present(value, field_name, required, ("not an ISO 8601 date-time", "invalid_datetime"))
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(field_name, "not an ISO 8601 date-time", "invalid_datetime") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=LONDON)


def code(table: dict[str, str], value: str | None, field_name: str, *, required: bool = True) -> str | None:
    """A source code looked up in a mapping table (connectors/mappings/*.yaml)."""
    text = _present(value, field_name, required, ("not a code", "unknown_code"))
    if text is None:
        return None
    mapped = table.get(text)
    if mapped is None:
        raise RecordError(field_name, f"not one of the codes in the mapping table ({len(table)} codes)",
                          "unknown_code")
    return mapped
