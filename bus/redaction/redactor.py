"""Find and replace what identifies people in free text, with typed placeholders such as
[PERSON] or [ADDRESS]: Presidio's analyzer over spaCy's English entity recogniser and the
recognisers in recognisers.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import regex

from bus.redaction import recognisers as r

#: placeholder kind for each entity the analyzer reports; anything else found is ignored
PLACEHOLDER = {
    "PERSON": "PERSON", r.SUBJECT: "PERSON", "ORGANIZATION": "PERSON",
    r.ADDRESS: "ADDRESS", r.DOB: "DATE_OF_BIRTH",
    r.NHS: "NHS_NUMBER", r.UPN: "UPN", r.PHONE: "PHONE", r.EMAIL: "EMAIL", r.POSTCODE: "POSTCODE",
}
# When spans overlap, the merged span takes the most specific kind.
_PRIORITY = ("NHS_NUMBER", "UPN", "EMAIL", "PHONE", "POSTCODE", "DATE_OF_BIRTH", "ADDRESS", "PERSON")
# What people are called by their relation, not their name, is kept: "Mum said", "Nan's house".
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
_NAME_LIKE = regex.compile(r"[A-Z][a-z]+(?:['\-][A-Z][a-z]+)?(?: [A-Z][a-z]+(?:['\-][A-Z][a-z]+)?){0,3}")


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    kind: str


class Redactor:
    """One analyzer, built once per process (~0.5 s, ~50 MB) and shared; used from one thread at a time."""

    def __init__(self) -> None:
        # Presidio logs at import (its device) and warns of recognisers for other languages.
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer

        from bus.redaction.model import load_ner

        class _Engine(SpacyNlpEngine):
            """Presidio's spaCy engine over the verified model, never a download."""

            def load(self) -> None:
                self.nlp = {"en": load_ner()}  # type: ignore[assignment]

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
        class _NoContext(ContextAwareEnhancer):
            """Scores are not used (everything found is redacted), so context words that raise
            them would only cost time (a quarter of the analysis)."""

            def enhance_using_context(self, text: str, raw_results: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
                return raw_results

        self._analyzer: Any = AnalyzerEngine(
            registry=registry, nlp_engine=self._nlp, supported_languages=["en"],
            context_aware_enhancer=_NoContext(context_similarity_factor=0, min_score_with_context_similarity=0,
                                              context_prefix_count=0, context_suffix_count=0))

    def find_spans(self, text: str, names: Iterable[str] = ()) -> list[Span]:
        return self.find_spans_many([(text, tuple(names))])[0]

    def find_spans_many(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[Span]]:
        """Spans to redact in each (text, subject names), the texts run through spaCy together."""
        texts = [text for text, _ in items]
        artifacts = (found[1] for found in self._nlp.process_batch(texts, "en", batch_size=64))
        out = []
        for (text, names), nlp_artifacts in zip(items, artifacts, strict=True):
            subject = r.subject_name_recogniser(names)
            results = self._analyzer.analyze(
                text=text, language="en", nlp_artifacts=nlp_artifacts, score_threshold=0.0,
                ad_hoc_recognizers=[subject] if subject is not None else None,
                allow_list=list(KINSHIP), allow_list_match="exact")
            out.append(_merge(text, results))
        return out

    def redact(self, text: str, names: Iterable[str] = ()) -> str:
        return apply(text, self.find_spans(text, names))

    def redact_many(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        return [apply(text, spans) for (text, _), spans in zip(items, self.find_spans_many(items), strict=True)]


_NOT_NAMES = frozenset(r.NOT_NAMES) | frozenset(KINSHIP) | frozenset(w.capitalize() for w in r.RELATIONS)
_PREVIOUS_WORD = regex.compile(r"([A-Z][a-z]+(?:['\-][A-Z][a-z]+)?) $")
_AND_NEXT = regex.compile(r"^,? (?:and|&) ([A-Z][a-z]+(?:['\-][A-Z][a-z]+)?)\b")


def _people(text: str, spans: list[Span]) -> list[Span]:
    """What a note says about people beyond the model's own spans: the given name before a
    surname it found ("brother Bilal [Iqbal]"), the next name in a pair ("Naveed and
    Shazia"), and every later mention of a name found once ("Stevie ... who Stevie was")."""
    out = list(spans)
    for span in spans:
        if span.kind != "PERSON":
            continue
        before = _PREVIOUS_WORD.search(text, 0, span.start)
        if before and before.group(1) not in _NOT_NAMES and (before.start() == 0 or text[before.start() - 1] != "."):
            out.append(Span(before.start(), span.end, "PERSON"))
        after = _AND_NEXT.match(text[span.end:span.end + 40])
        if after and after.group(1) not in _NOT_NAMES:
            out.append(Span(span.end + after.start(1), span.end + after.end(1), "PERSON"))
    names = {w for s in out if s.kind == "PERSON" for w in regex.findall(r"[A-Z][a-z]+(?:['\-][A-Z][a-z]+)?",
                                                                          text[s.start:s.end])
             if w not in _NOT_NAMES and len(w) > 2}
    if names:
        out += [Span(m.start(), m.end(), "PERSON") for m in r.WORD.finditer(text) if m.group(1) in names]
    return out


def _merge(text: str, results: Iterable[Any]) -> list[Span]:
    """Overlapping or touching spans of a person become one; any other overlap becomes one
    span of the most specific kind, so a redaction never leaves half a value behind."""
    spans = []
    for found in results:
        kind = PLACEHOLDER.get(found.entity_type)
        if kind is None:
            continue
        value = text[found.start:found.end]
        if found.entity_type == "ORGANIZATION" and (
                _ORGANISATION.search(value) or _ALL_CAPS.fullmatch(value) or not _NAME_LIKE.fullmatch(value)):
            continue
        end = found.end
        if kind == "PERSON" and found.entity_type != r.SUBJECT:
            # A name has no digits: "Kowalczyk 3021" (a collar number) is trimmed to the name,
            # "ref NSP/24/118823" is no name at all.
            words = regex.match(r"(?:[^\s\d]+(?:\s+|$))*?(?=\S*\d|$)", value)
            end = found.start + len(words.group(0).rstrip()) if words else found.start
            name = text[found.start:end]
            if end == found.start or name in _NOT_NAMES or (name.islower() and name.capitalize() in _NOT_NAMES):
                continue
        spans.append(Span(found.start, end, kind))
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
    """The process's redactor, built on first use (or by `warm_up` in the background)."""
    global _redactor
    if _redactor is None:
        with _lock:
            if _redactor is None:
                _redactor = Redactor()
    return _redactor


def warm_up() -> threading.Thread:
    """Build the redactor in a thread, so a worker is not slowed by it on its first event."""
    thread = threading.Thread(target=default_redactor, name="redactor-warm-up", daemon=True)
    thread.start()
    return thread


def find_spans(text: str, names: Iterable[str] = ()) -> list[Span]:
    return default_redactor().find_spans(text, names)


def redact(text: str, names: Iterable[str] = ()) -> str:
    return default_redactor().redact(text, names)
