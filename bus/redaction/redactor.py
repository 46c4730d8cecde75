"""Find and replace what identifies people in free text, with typed placeholders such as
[PERSON] or [ADDRESS]: Presidio's analyzer over spaCy's English entity recogniser and the
recognisers in recognisers.py.

Fails closed: if the analyzer cannot be built the caller gets RedactorUnavailable (ingest holds
its batch and retries); if a pattern times out (Presidio would skip it and carry on) the text
is refused with RedactionFailed rather than passed on half redacted."""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import regex

from bus.exceptions import SgbusError
from bus.redaction import recognisers as r
from bus.redaction.errors import RedactionFailed, RedactorUnavailable

#: placeholder kind for each entity the analyzer reports; anything else found is ignored
PLACEHOLDER = {
    "PERSON": "PERSON", r.SUBJECT: "PERSON", "ORGANIZATION": "PERSON",
    r.ADDRESS: "ADDRESS", r.DOB: "DATE_OF_BIRTH",
    r.NHS: "NHS_NUMBER", r.UPN: "UPN", r.PHONE: "PHONE", r.EMAIL: "EMAIL", r.POSTCODE: "POSTCODE",
    r.SUBJECT_ID: "ID",
}
#: what the redactor is given for one text: (text, subject names) or (text, subject names, the
#: subject's own values as (kind, value): identifiers, postcode, date of birth)
Item = tuple[str, Sequence[str]] | tuple[str, Sequence[str], Sequence[tuple[str, str]]]

# When spans overlap, the merged span takes the most specific kind.
_PRIORITY = ("NHS_NUMBER", "UPN", "ID", "EMAIL", "PHONE", "POSTCODE", "DATE_OF_BIRTH", "ADDRESS", "PERSON")
# What people are called by their relation, not their name, is kept: "Mum said", "Nan's house"
# (unless it is the subject's own name: a child called Nana is redacted).
KINSHIP = ("Mum", "Dad", "Mummy", "Daddy", "Mam", "Nan", "Nana", "Nanny", "Gran", "Granny", "Grandad", "Grandma",
           "Uncle", "Auntie", "Aunty", "Mama", "Baba", "Papa", "Sis", "Bro")
# The small model tags many people as organisations; an ORG span is kept as a person unless it
# looks like an organisation (these words, or all capitals such as "MASH").
_ORGANISATION = regex.compile(
    r"\b(?:Academy|Police|School|Primary|Juniors?|Infants|College|University|Council|Hospital|Trust|NHS|Service|"
    r"Services|Team|Centre|Center|Club|Church|Mosque|Temple|Unit|Ward|Clinic|Surgery|Practice|Department|Agency|"
    r"Partnership|Board|Court|Estate|Nursery|Home|Hub|Project|Foundation|Charity|Ltd|Limited|Group|Point|Street|"
    r"Road|Lane|Park|Station|Bank|Office|Prison|Housing|Health|Care|Social|Children|Family|Families|Youth|"
    r"Safeguarding|Emergency|Department|Facebook|Instagram|Snapchat|WhatsApp|TikTok|Tesco|McDonald's)\b")
_ALL_CAPS = regex.compile(r"[A-Z0-9&/ .\-']+")
# An organisation span is taken for a person only when it reads as a name: capitalised words only.
_NAME_LIKE = regex.compile(rf"{r.NAME}(?: {r.NAME}){{0,3}}(?:'s)?")
_NOT_NAMES = frozenset(r.NOT_NAMES) | frozenset(KINSHIP) | frozenset(w.capitalize() for w in r.RELATIONS)
_PREVIOUS_WORD = regex.compile(rf"({r.NAME}) $")
_NEXT_IN_LIST = regex.compile(rf"^(?:,\s|\s(?:and|&)\s)({r.NAME})\b")
_CAPITALISED_WORD = regex.compile(r.NAME)
# Characters that hide a name from matching without showing on screen.
_INVISIBLE = frozenset("\u00ad\u200b\u200c\u200d\u2060\ufeff")
_QUOTES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'}
# spaCy's tokenizer takes quadratic time over long runs of punctuation (2,000 "=" cost ~2 s).
_PUNCTUATION_RUN = regex.compile(r"[^\w\s]{16,}")


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    kind: str


class _Timeouts(logging.Filter):
    """Presidio logs and skips a pattern that times out; note it so the text is refused.
    Every Presidio record is kept out of the logs (none may carry text, but none is needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if "timed out" in str(record.msg):
            self.local.timed_out = True
        return False


_TIMEOUTS = _Timeouts()


def prepared(text: str) -> tuple[str, list[int]]:
    """The text as it is analysed, and where each of its characters came from: invisible
    characters removed, curly quotes and full-width letters made plain, long punctuation runs
    blanked, and a text in capitals given capitalised words (so the model sees names)."""
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        if ch in _INVISIBLE or unicodedata.category(ch) == "Cf":  # as subject names are read (recognisers._visible)
            continue
        plain = _QUOTES.get(ch) or unicodedata.normalize("NFKC", ch)
        out.append(plain if len(plain) == 1 else ch)
        origin.append(i)
    clean = _PUNCTUATION_RUN.sub(lambda m: " " * len(m.group(0)), "".join(out))
    letters = [c for c in clean if c.isalpha()]
    if len(letters) >= 20 and sum(c.isupper() for c in letters) >= 0.6 * len(letters):
        clean = regex.sub(r"\p{L}+", lambda m: _capitalise(m.group(0)), clean)
    origin.append(len(text))
    return clean, origin


def _capitalise(word: str) -> str:
    head, tail = word[0].upper(), word[1:].lower()
    return head + tail if len(head) == 1 and len(tail) == len(word) - 1 else word


class Redactor:
    """One analyzer, built once per process (0.5-2 s, ~50 MB) and shared; used from one thread at a time."""

    def __init__(self) -> None:
        presidio_log = logging.getLogger("presidio-analyzer")
        presidio_log.setLevel(logging.WARNING)
        if _TIMEOUTS not in presidio_log.filters:
            presidio_log.addFilter(_TIMEOUTS)
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer

        from bus.redaction.model import load_ner

        class _Engine(SpacyNlpEngine):
            """Presidio's spaCy engine over the verified model, never a download."""

            def load(self) -> None:
                self.nlp = {"en": load_ner()}  # type: ignore[assignment]

        class _NoContext(ContextAwareEnhancer):
            """Scores are not used (everything found is redacted), so context words that raise
            them would only cost time."""

            def enhance_using_context(self, text: str, raw_results: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
                return raw_results

        ner = NerModelConfiguration(
            model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON", "ORG": "ORGANIZATION"},
            labels_to_ignore=["CARDINAL", "DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW", "LOC", "MONEY", "NORP",
                              "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART"],
            low_score_entity_names=[])
        self._nlp = _Engine(models=[{"lang_code": "en", "model_name": "verified"}], ner_model_configuration=ner)
        self._nlp.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.add_recognizer(SpacyRecognizer(supported_entities=["PERSON", "ORGANIZATION"]))
        for recogniser in [*r.identifier_recognisers(), r.address_recogniser(), *r.dob_recognisers(),
                           *r.people_recognisers()]:
            registry.add_recognizer(recogniser)
        self._analyzer: Any = AnalyzerEngine(
            registry=registry, nlp_engine=self._nlp, supported_languages=["en"],
            context_aware_enhancer=_NoContext(context_similarity_factor=0, min_score_with_context_similarity=0,
                                              context_prefix_count=0, context_suffix_count=0))

    def find_spans(self, text: str, names: Iterable[str] = (), values: Iterable[tuple[str, str]] = ()) -> list[Span]:
        return self.find_spans_many([(text, tuple(names), tuple(values))])[0]

    def find_spans_many(self, items: Sequence[Item]) -> list[list[Span]]:
        """Spans (in the original text) to redact in each (text, subject names[, the subject's
        own values: (kind, value) of its identifiers, postcode and date of birth]), the texts
        run through spaCy together. RedactionFailed if any text could not be fully analysed."""
        prepared_texts = [prepared(item[0]) for item in items]
        artifacts = (found[1] for found in self._nlp.process_batch([c for c, _ in prepared_texts], "en",
                                                                    batch_size=64))
        out = []
        for item, (clean, origin), nlp_artifacts in zip(items, prepared_texts, artifacts, strict=True):
            ad_hoc = [found for found in (r.subject_name_recogniser(item[1]),
                                          r.subject_value_recogniser(item[2] if len(item) > 2 else ()))
                      if found is not None]
            _TIMEOUTS.local.timed_out = False
            results = self._analyzer.analyze(
                text=clean, language="en", nlp_artifacts=nlp_artifacts, score_threshold=0.0,
                ad_hoc_recognizers=ad_hoc or None)
            if _TIMEOUTS.local.timed_out:
                raise RedactionFailed("a redaction pattern timed out; the text is not passed on")
            out.append([Span(origin[s.start], origin[s.end - 1] + 1, s.kind) for s in _merge(clean, results)])
        return out

    def redact(self, text: str, names: Iterable[str] = (), values: Iterable[tuple[str, str]] = ()) -> str:
        return apply(text, self.find_spans(text, names, values))

    def redact_many(self, items: Sequence[Item]) -> list[str]:
        return [apply(item[0], spans) for item, spans in zip(items, self.find_spans_many(items), strict=True)]


def _person(text: str, start: int, end: int) -> tuple[int, int] | None:
    """A non-subject person span as a name: relation words before it dropped ("Mum Sarah
    Jones" keeps "Mum"), digits after it cut ("Kowalczyk 3021" is a collar number); None if
    nothing of a name is left ("ref NSP/24/118823", "Landline")."""
    value = text[start:end]
    words = regex.match(r"(?:[^\s\d]+(?:\s+|$))*?(?=\S*\d|$)", value)
    end = start + len(words.group(0).rstrip()) if words else start
    while True:
        lead = regex.match(r"(\S+)\s+", text[start:end])
        if lead is None or lead.group(1) not in _NOT_NAMES:
            break
        start += lead.end()
    name = text[start:end]
    if end <= start or name in _NOT_NAMES or (name.islower() and name.capitalize() in _NOT_NAMES):
        return None
    return start, end


def _people(text: str, spans: list[Span]) -> list[Span]:
    """What a note says about people beyond the model's own spans: the given name before a
    surname it found ("brother Bilal [Iqbal]"), the next names of a list ("Naveed and
    Shazia", "Ava, Stuart and Leanne"), and every later mention of a name found once."""
    out = list(spans)
    walked = -1  # how far a list has been followed: a name inside it starts no second walk
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if span.kind != "PERSON":
            continue
        before = _PREVIOUS_WORD.search(text, 0, span.start)
        if before and before.group(1) not in _NOT_NAMES and (before.start() == 0 or text[before.start() - 1] != "."):
            out.append(Span(before.start(), span.end, "PERSON"))
        if span.end <= walked:
            continue  # each name of a long list walking the rest of it made spans by the square of its length
        end = span.end
        while (after := _NEXT_IN_LIST.match(text[end:end + 60])) and after.group(1) not in _NOT_NAMES:
            out.append(Span(end + after.start(1), end + after.end(1), "PERSON"))
            end += after.end(1)
        walked = max(walked, end)
    names = {r.fold(w) for s in out if s.kind == "PERSON" for w in _CAPITALISED_WORD.findall(text[s.start:s.end])
             if w not in _NOT_NAMES and len(w) > 2}
    if names:
        out += [Span(m.start(), m.end(), "PERSON") for m in r.WORD.finditer(text) if r.fold(m.group(0)) in names]
    return out


def _merge(text: str, results: Iterable[Any]) -> list[Span]:
    """Overlapping or touching spans of a person become one; any other overlap becomes one
    span of the most specific kind, so a redaction never leaves half a value behind."""
    spans = []
    for found in results:
        kind = PLACEHOLDER.get(found.entity_type)
        if kind is None:
            continue
        start, end = found.start, found.end
        if found.entity_type == "ORGANIZATION":
            value = text[start:end]
            if _ORGANISATION.search(value) or _ALL_CAPS.fullmatch(value) or not _NAME_LIKE.fullmatch(value):
                continue
        if kind == "PERSON" and found.entity_type != r.SUBJECT:
            trimmed = _person(text, start, end)
            if trimmed is None:
                continue
            start, end = trimmed
        spans.append(Span(start, end, kind))
    spans = sorted(_people(text, spans))
    merged: list[Span] = []
    for span in spans:
        last = merged[-1] if merged else None
        if last is not None and (span.start < last.end or (
                last.kind == span.kind == "PERSON" and text[last.end:span.start].strip() == "")):
            kind = min(last.kind, span.kind, key=_PRIORITY.index)
            merged[-1] = Span(last.start, max(last.end, span.end), kind)
        else:
            merged.append(span)
    return merged


def apply(text: str, spans: Iterable[Span]) -> str:
    """`text` with each span replaced by its placeholder, e.g. [PHONE]."""
    out, last = [], 0
    for span in spans:
        out.append(text[last:span.start])
        out.append(f"[{span.kind}]")
        last = span.end
    out.append(text[last:])
    return "".join(out)


_lock = threading.Lock()
_redactor: Redactor | None = None


def default_redactor() -> Redactor:
    """The process's redactor, built on first use (or by `warm_up` in the background);
    RedactorUnavailable if it cannot be built."""
    global _redactor
    if _redactor is None:
        with _lock:
            if _redactor is None:
                try:
                    _redactor = Redactor()
                except Exception as exc:
                    raise RedactorUnavailable(f"the redactor cannot be built ({type(exc).__name__}: "
                                              f"{exc if isinstance(exc, SgbusError | OSError) else ''})") from exc
    return _redactor


def warm_up() -> threading.Thread:
    """Build the redactor in a thread, so a worker is not slowed by it on its first event."""
    def build() -> None:
        try:
            default_redactor()
        except RedactorUnavailable:
            pass  # the first batch raises it again and is held
    thread = threading.Thread(target=build, name="redactor-warm-up", daemon=True)
    thread.start()
    return thread


def find_spans(text: str, names: Iterable[str] = (), values: Iterable[tuple[str, str]] = ()) -> list[Span]:
    return default_redactor().find_spans(text, names, values)


def redact(text: str, names: Iterable[str] = (), values: Iterable[tuple[str, str]] = ()) -> str:
    return default_redactor().redact(text, names, values)
