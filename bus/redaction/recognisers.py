"""Presidio recognisers for what safeguarding narrative names: UK identifiers (checksums
verified), street addresses, dates of birth, people by title or by an upper-case surname,
and the subject's own names."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import regex
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult

from schemas.identifiers import nhs_number_is_valid, upn_is_valid

# Capitalisation carries the signal in names and addresses, so those patterns are case-sensitive.
CASE_SENSITIVE = regex.DOTALL | regex.MULTILINE
ANY_CASE = regex.DOTALL | regex.MULTILINE | regex.IGNORECASE

# Entity names (Presidio's own where one exists); the placeholder is chosen from them in redactor.py.
PERSON, ADDRESS, DOB = "PERSON", "UK_ADDRESS", "DATE_OF_BIRTH"
NHS, UPN, PHONE, EMAIL, POSTCODE = "UK_NHS", "UK_UPN", "PHONE_NUMBER", "EMAIL_ADDRESS", "UK_POSTCODE"
SUBJECT = "SUBJECT_NAME"
#: the subject's own LA child id or police person id, written into the text
SUBJECT_ID = "SUBJECT_ID"


class _Validated(PatternRecognizer):
    """A pattern whose every match is checked by `valid` (a checksum, a number plan)."""

    def valid(self, text: str) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def validate_result(self, pattern_text: str) -> bool:
        return self.valid(pattern_text)


class NhsNumberRecogniser(_Validated):
    def __init__(self) -> None:
        super().__init__(supported_entity=NHS, name="NhsNumberRecogniser", global_regex_flags=ANY_CASE,
                         patterns=[Pattern("nhs_number",
                                           r"(?<![\w])\d{3}[ .\-\u2013]{0,2}\d{3}[ .\-\u2013]{0,2}\d{4}(?![\w])", 0.5)])

    def valid(self, text: str) -> bool:
        return nhs_number_is_valid(regex.sub(r"\D", "", text))


class UpnRecogniser(_Validated):
    def __init__(self) -> None:
        super().__init__(supported_entity=UPN, name="UpnRecogniser", global_regex_flags=ANY_CASE,
                         patterns=[Pattern("upn", r"(?<![\w])[A-Z]\s?(?:\d\s?){11}[0-9A-Z](?![\w])", 0.5)])

    def valid(self, text: str) -> bool:
        return upn_is_valid(regex.sub(r"\s", "", text).upper())


class UkPhoneRecogniser(_Validated):
    """+44 or 0, then digits with spaces, hyphens, dots or brackets: a UK number's 10 or 11 digits."""

    def __init__(self) -> None:
        super().__init__(supported_entity=PHONE, name="UkPhoneRecogniser", global_regex_flags=ANY_CASE,
                         patterns=[Pattern("uk_phone",
                                           r"(?<![\w+])(?:\+\s?44|0044|\(\s?0|0)[\d\s().\-\u2013]{8,18}\d(?!\d)", 0.5)])

    def valid(self, text: str) -> bool:
        digits = regex.sub(r"\D", "", text)
        if digits.startswith("0044"):
            digits = digits[2:]
        if digits.startswith("44"):
            digits = "0" + digits[2:].removeprefix("0")
        if len(digits) < 10 or digits[0] != "0":
            return False
        # Only some 01 area codes have ten-digit numbers; mobiles, 02, 03, 05 and 08 have eleven.
        return len(digits) in (10, 11) if digits[1] == "1" else len(digits) == 11 and digits[1] in "23578"


class EmailRecogniser(PatternRecognizer):
    """Presidio's own e-mail recogniser asks tldextract, which fetches the public suffix list
    over the network on first use; a pattern is enough to redact an address."""

    def __init__(self) -> None:
        super().__init__(supported_entity=EMAIL, name="EmailRecogniser", global_regex_flags=ANY_CASE, patterns=[
            Pattern("email", r"(?<![\w.+-])[A-Z0-9._%+-]+@[A-Z0-9-]+(?:\.[A-Z0-9-]+)*\.[A-Z]{2,}(?![\w-])", 0.9)])


class PostcodeRecogniser(_Validated):
    """Outward code (letter first, then a digit) and inward code (a digit, two letters)."""

    def __init__(self) -> None:
        super().__init__(supported_entity=POSTCODE, name="PostcodeRecogniser", global_regex_flags=ANY_CASE,
                         patterns=[Pattern("postcode", r"(?<![A-Z0-9])[A-Z]{1,2}\d[A-Z\d]?[\s-]*\d[A-Z]{2}(?![A-Z0-9])",
                                           0.5)])

    def valid(self, text: str) -> bool:
        # A postcode-shaped string is redacted even when its inward letters are not ones Royal
        # Mail uses (C I K M O V): a mistyped postcode still locates a family.
        return True


# -- addresses -------------------------------------------------------------------------------------
_WORD = r"\p{Lu}\p{Ll}+(?:['\u2019]s)?(?:-\p{Lu}\p{Ll}+)?"
_STREET_SUFFIX = (
    r"(?:Road|Rd|Street|St|Lane|Close|Court|Avenue|Ave|Drive|Way|Crescent|Gardens|Terrace|Place|Rise|Walk|"
    r"Grove|Row|Parade|Square|Yard|Mews|View|Lawns|Green|Park|Hill|Gate|Wharf|Quay|Vale|Side|Fields|"
    r"Meadows|Path|Circus|Embankment|Broadway|Approach|Boulevard|Chase|Croft|Dene|End|Hollow|Mount)"
)
_STREET = (rf"(?:(?:{_WORD}\s+){{1,3}}{_STREET_SUFFIX}\b(?:(?<=\b(?:Rd|St|Ave))\.)?"
           r"|[A-Z][a-z]+(?:gate|walk|way|side|field|fields|bury)\b)")
_NUMBER = r"\d{1,4}[A-Za-z]?(?:-\d{1,4})?"
_UNIT = r"(?:Flat|Room|Apartment|Apt\.?|Unit|Plot)\s+\d{1,4}[A-Za-z]?"
_BUILDING_SUFFIX = (
    r"(?:House|Court|Tower|Flats|Lodge|Hotel|Home|Lodgings|Cottages?|Mews|Mansions|Buildings|Hall|"
    r"Heights|Point|Farm|Rectory|Vicarage|Barn|Mill|Manor|Grange|Bungalow|Villa)"
)
_BUILDING = rf"(?:The\s+)?(?:{_WORD}\s+){{0,3}}{_BUILDING_SUFFIX}\b"
_ESTATE = rf"(?:{_WORD}\s+){{1,2}}Estate\b"
_TOWN = r"(?:,\s+(?!Flat\b|Room\b|DOB\b|NHS\b|UPN\b|Mum\b|Dad\b)[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?\b(?!\s*\())?"
# Notes typed in a hurry write addresses in lower case ("lives at 42 willow close"), or in
# capitals. Without capitals to go by, the street's words are only told from a count ("2 buses down
# the road") by what they are not: words of place, direction, time, quantity, dates, people and
# the like never start a street's name here. Matched in any case (the capitalised forms are the
# patterns above).
_NOT_A_STREET_WORD = (
    r"(?:the|a|an|and|or|but|of|to|in|on|at|up|down|along|across|over|under|by|from|into|onto|near|past|"
    r"off|round|around|through|behind|outside|inside|towards?|miles?|minutes?|mins?|secs?|seconds?|hours?|"
    r"hrs|days?|nights?|weeks?|months?|years?|times?|yards?|metres?|meters?|km|feet|foot|steps?|doors?|"
    r"houses?|homes?|people|children|kids|boys|girls|adults|men|women|lads|youths|mates|teenagers|cars?|"
    r"buses|vans?|cans|bottles|police|officers?|other|same|his|her|their|our|my|your|its|this|that|these|"
    r"those|wrong|busy|quiet|dark|back|front|end|side|older|younger|little|big|small|brothers?|sisters?|"
    r"siblings?|friends?|parents?|cousins?|aunts?|uncles?|carers?|teachers?|staff|pupils?|students?|dogs?|"
    r"cats?|january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|"
    r"mar|apr|jun|jul|aug|sept?|oct|nov|dec|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b"
)
_ANY_CASE_STREET = (
    rf"(?i:(?:(?!{_NOT_A_STREET_WORD})(?:st\.?|[a-z]{{3,}}(?:['\u2019][a-z]+)?(?:-[a-z]{{2,}})?)\s+){{1,2}}"
    r"(?:road|rd|street|st|lane|close|avenue|ave|drive|crescent|gardens|terrace|grove|mews|way|walk|place|"
    r"square|rise|court|parade|row|hill|park|view|green|gate)\b"
    # a one-word town after a comma, where the sentence or clause ends ("42 willow close, leeds.")
    r"(?:,\s+(?!(?:mum|dad|nan|she|he|they|today|yesterday)\b)[a-z]{3,}(?=\s*(?:[.;:!?)]|$)))?)"
)


def address_recogniser() -> PatternRecognizer:
    """House or flat number + street, flats in named buildings, named houses on a street."""
    return PatternRecognizer(supported_entity=ADDRESS, name="UkAddressRecogniser", global_regex_flags=CASE_SENSITIVE,
                             patterns=[
        # [Flat 3,] [Willow Court,] 18 Station Road[, Town]
        Pattern("numbered_street",
                rf"\b(?:{_UNIT},?\s+)?(?:(?:{_NUMBER}\s+)?{_BUILDING},\s+)?{_NUMBER},?\s+{_STREET}{_TOWN}", 0.6),
        # Flat 12b Alder House[, Kingsmead Estate | , Canal Street]
        Pattern("flat_in_building",
                rf"\b{_UNIT},?\s+{_BUILDING}(?:,\s+(?:{_NUMBER}\s+)?(?:{_STREET}|{_ESTATE}))?{_TOWN}", 0.6),
        # Ivy Cottage, Mill Lane / 2 Meadow Cottages, Long Lane / The Old Rectory, Church Lane
        Pattern("named_house_on_street", rf"\b(?:{_NUMBER}\s+)?{_BUILDING},\s+(?:{_NUMBER}\s+)?{_STREET}{_TOWN}", 0.55),
        # 42 willow close / flat 3, 18 station road / 42 WILLOW CLOSE / 42 st john's road
        Pattern("any_case_street",
                rf"\b(?:(?i:flat|room|apartment|unit)\s+{_NUMBER},?\s+)?{_NUMBER},?\s+{_ANY_CASE_STREET}", 0.5),
    ])


# -- dates of birth --------------------------------------------------------------------------------
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_DATE = (r"(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.\-]\d{1,2}[/.\-](?:\d{4}|\d{2})"
         rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\.?,?\s+\d{{4}}|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})")
_DOB_KEY = r"(?:\bd\.?\s?o\.?\s?b\b\.?|\bdate\s+of\s+birth\b|\bborn(?:\s+on)?\b|\bb\.)"
_NOT_A_NAME = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|On|At|By|Since|From|Until|Today)"


def dob_recognisers() -> list[PatternRecognizer]:
    """A date after "DOB", "born" or "date of birth"; or straight after a name, in brackets or
    after a comma ("Callum Reid (07/06/2011)"). Other dates (incidents, visits) are kept."""
    return [
        PatternRecognizer(supported_entity=DOB, name="DobAfterKeywordRecogniser", global_regex_flags=ANY_CASE,
                          patterns=[Pattern("dob_after_keyword",
                                            rf"(?<={_DOB_KEY}\s*[:\-]?\s*(?:born\s+(?:on\s+)?)?){_DATE}(?!\d)", 0.85)]),
        PatternRecognizer(supported_entity=DOB, name="DobAfterNameRecogniser", global_regex_flags=CASE_SENSITIVE,
                          patterns=[Pattern("dob_after_name",
                                            rf"(?<=\b[A-Z][a-z]+(?:\s+[A-Z][A-Za-z'\-]+)?(?:\s\(|,\s))"
                                            rf"(?<!\b{_NOT_A_NAME}(?:\s\(|,\s)){_DATE}(?!\d)", 0.5)]),
    ]


# -- people ----------------------------------------------------------------------------------------
_TITLES = (r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|PC|PCSO|PS|DC|DS|DI|DCI|Sgt|Insp|Officer|Nurse|Pastor|Cllr|Rev|Father|"
           r"Sister)")
#: a capitalised name, with Mc/Mac/O'/D' prefixes and inner hyphens or apostrophes, any script
NAME = r"(?:Mc|Mac|O'|D')?\p{Lu}\p{Ll}+(?:['\-](?:Mc|Mac)?\p{Lu}\p{Ll}+)?"
_NAME_WORD = rf"(?:{NAME}|\p{{Lu}}{{2,}})"
# Acronyms a note puts after a given name that are not surnames ("Dad NFA", "Ava DOB").
_ACRONYMS = (r"(?:NHS|UPN|DOB|CSC|MASH|DASH|DSL|GP|ED|AE|PE|CP|CIN|SW|HV|NRM|YOT|YJS|EDT|SALT|TAF|MDA|RTC|CSE|CCE|FGM|"
             r"NKDA|LMP|BMI|GCS|ASB|ABE|MISPER|CAMHS|SENCO|DBS|NSP|IP|DA|CLA|LAC|LA|PC|DC|DS|PS|CAD|OK|TV|UK|AM|PM|"
             r"SEN|SEND|EHCP|ICPC|RCPC|LADO|PLO|HR|IT|ID|CCTV|ASAP|RIP|ACE|NFA|BTP|MARAC|MAPPA|EHE|PRU|KS|RE|OT)")
_NOT_A_GIVEN_NAME = (r"(?:Pt|Year|Ref|Mum|Dad|Father|Mother|Police|The|Crime|Case|Incident|Risk|Child|Victim|Suspect|"
                     r"Note|Log|Outcome|Decision|Agreed|Update|Present|School|Staff|Action|Plan|Called|Seen)")


# Words for a person's relation or role, after which a capitalised word is a name ("dad Stuart",
# "friend Marcus", "HV Morven Gillies"); the word itself is kept.
RELATIONS = (
    "mum", "mom", "mother", "dad", "father", "parent", "parents", "brother", "sister", "sibling", "siblings", "twin",
    "son", "daughter", "uncle", "aunt", "auntie", "aunty", "nan", "nana", "nanny", "gran", "granny", "grandma",
    "grandmother", "grandad", "grandfather", "grandparent", "cousin", "niece", "nephew", "stepdad", "stepmum",
    "stepfather", "stepmother", "step-dad", "step-mum", "friend", "friends", "boyfriend", "girlfriend", "partner",
    "ex-partner", "husband", "wife", "fiance", "carer", "carers", "neighbour", "lodger", "nurse", "HV", "SW",
    "worker", "teacher", "officer", "DSL", "SENCO", "head", "headteacher", "manager", "consultant", "midwife",
    "paramedic", "child", "baby", "pupil", "pt", "patient", "victim", "suspect", "perpetrator", "offender",
    "called", "named", "known as", "aka", "meet", "meeting", "with", "by", "from", "and",
)
_RELATION = "|".join(regex.escape(w) for w in sorted(RELATIONS, key=len, reverse=True))
_CAPITALISED = NAME
# Capitalised words after a relation that are not names ("with Police", "to School").
NOT_NAMES = (
    "The", "A", "An", "Police", "School", "Social", "Services", "Care", "Children", "Child", "Health", "Team", "Early",
    "Help", "Year", "Mum", "Dad", "Mummy", "Daddy", "Nan", "Nanny", "Gran", "Grandad", "Grandma", "Uncle", "Auntie",
    "Aunty", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "A&E", "Hospital",
    "MASH", "GP", "CSC", "He", "She", "They", "His", "Her", "Their", "It", "This", "That", "I", "We", "You", "No",
    "Yes", "Dr", "Mr", "Mrs", "Ms", "Miss", "PC", "DC", "Pt", "Family", "Friends", "Parents", "Carers", "Staff",
    "Street", "Road", "Lane", "Court", "House", "Home", "Estate", "Station", "Centre", "Academy", "Primary",
    "Unit", "Ward", "Emergency", "Department", "Email", "Phone", "Ref", "Intel", "Info", "Victim", "Neighbour",
    "Flag", "Obs", "Attendance", "Tel", "Mobile", "Landline", "Address", "Referral", "Safeguarding", "Christmas",
    "Easter", "Eid", "Ramadan", "Diwali",
    "English", "British", "Muslim", "Romanian", "Polish", "Pakistan", "Poland", "Romania", "Nigeria",
)
# Months are names too ("sister April", "June is 16"): after a relation word a month is taken
# for a name; on its own ("in June") it is left to the model.
_NOT_NAME = "|".join(regex.escape(w) for w in NOT_NAMES)


def people_recognisers() -> list[PatternRecognizer]:
    """Names the statistical model misses in notes: a surname after a title or rank ("PC
    Hollis", "Dr Okafor"), a given name with an upper-case surname ("Leanne MORROW"), a name
    after a relation or role ("dad Stuart", "nurse Leah Moran"), and a quoted nickname after
    one ("stayed with \"Big Man\"")."""
    return [
        PatternRecognizer(supported_entity=PERSON, name="RelationNameRecogniser", global_regex_flags=CASE_SENSITIVE,
                          patterns=[Pattern("relation_then_name",
                                            rf"(?<=\b(?i:{_RELATION})(?:['\u2019]s)?(?:\s+|\s*[:\-\u2013]\s*)[\"\u201c']?)"
                                            rf"(?!(?:{_NOT_NAME})\b){_CAPITALISED}"
                                            rf"(?:\s(?!(?:{_NOT_NAME})\b){_CAPITALISED}\b(?!\s*\())?\b", 0.5)]),
        PatternRecognizer(supported_entity=PERSON, name="QuotedNicknameRecogniser", global_regex_flags=CASE_SENSITIVE,
                          patterns=[Pattern("quoted_nickname",
                                            rf"(?<=\b(?i:{_RELATION})(?:\s+|\s*[:\-\u2013]\s*)[\"\u201c'])\p{{Lu}}\p{{L}}+"
                                            r"(?:\s\p{Lu}\p{L}+)?"
                                            r"(?=[\"\u201d'])", 0.5)]),
        PatternRecognizer(supported_entity=PERSON, name="TitleNameRecogniser", global_regex_flags=CASE_SENSITIVE,
                          patterns=[Pattern("title_then_name",
                                            rf"(?<=\b{_TITLES}\.?\s(?:\d{{3,5}}\s)?){_NAME_WORD}"
                                            rf"(?:\s{_NAME_WORD}\b(?!\s*\())?\b", 0.6)]),
        PatternRecognizer(supported_entity=PERSON, name="UpperCaseSurnameRecogniser",
                          global_regex_flags=CASE_SENSITIVE,
                          patterns=[Pattern("given_then_SURNAME",
                                            rf"\b(?!{_NOT_A_GIVEN_NAME}\b){NAME}\s"
                                            rf"(?!{_ACRONYMS}\b)\p{{Lu}}{{2,}}(?:-\p{{Lu}}{{2,}})?\b", 0.6),
                                    # "MORROW, Leanne (mum)", "SMITH John": a register's SURNAME first
                                    Pattern("SURNAME_then_given",
                                            rf"\b(?!{_ACRONYMS}\b)\p{{Lu}}{{2,}}(?:-\p{{Lu}}{{2,}})?,?\s"
                                            rf"(?!{_NOT_A_GIVEN_NAME}\b|{_NOT_NAME}\b){NAME}\b", 0.6)]),
    ]


# A word of a name: a run of letters (any script), with inner apostrophes or hyphens ("O'Neill",
# "Mary-Jane"); digits and underscores end it, so "ava_testwood07" holds the words ava, testwood.
WORD = regex.compile(r"(?<![^\W\d_])[^\W\d_]+(?:['\-][^\W\d_]+)*(?![^\W\d_])")
_POSSESSIVE = regex.compile(r"'s$", regex.IGNORECASE)


def _visible(name: str) -> str:
    """A name without format characters (a soft hyphen pasted from a word processor, a zero-width
    space): inside a name they split it into words no text holds ("A\u00adva": "A", "va"), and
    the child's name went unredacted. The text is read without them too (redactor._INVISIBLE)."""
    return "".join(c for c in name if unicodedata.category(c) != "Cf")


def fold(word: str) -> str:
    """How name words are compared: compatibility forms, case-folded, possessive removed."""
    return _POSSESSIVE.sub("", unicodedata.normalize("NFKC", word).replace("\u2019", "'")).casefold()


class SubjectNameRecogniser(EntityRecognizer):
    """The subject's own names, in any case and possessive ("AVA'S"). Words are compared with
    a set rather than matched by a pattern made for each child, which had to be compiled for
    every new child (a third of the redaction time)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(fold(part) for name in names for part in WORD.findall(
            unicodedata.normalize("NFKC", _visible(name or "")).replace("\u2019", "'")) if len(part) >= 2)
        super().__init__(supported_entities=[SUBJECT], name="SubjectNameRecogniser")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: object = None) -> list[RecognizerResult]:
        return [RecognizerResult(SUBJECT, m.start(), m.end(), 1.0) for m in WORD.finditer(text)
                if fold(m.group(0)) in self.names]


#: which entity each kind of the subject's own values is redacted as
_VALUE_ENTITY = {"nhs_number": NHS, "upn": UPN, "la_child_id": SUBJECT_ID, "police_person_id": SUBJECT_ID,
                 "postcode": POSTCODE, "date_of_birth": DOB, "expected_delivery_date": DOB}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = "(" + "|".join(_MONTHS) + r")[a-z]*\.?"
#: a date written with numbers, one separator throughout: 21/12/2013, 21.12.13, 2013-12-21
_NUMERIC_DATE = regex.compile(r"(?<![0-9])([0-9]{1,4})([./\- ])([0-9]{1,2})\2([0-9]{2,4})(?![0-9])")
#: 21st December 2013, 21 of Dec '13; December 21, 2013
_DAY_MONTH_YEAR = regex.compile(rf"(?<![0-9])([0-9]{{1,2}})(?:st|nd|rd|th)?\s*(?:of\s+)?{_MONTH},?\s*'?"
                                r"([0-9]{4}|[0-9]{2})(?![0-9])", ANY_CASE)
_MONTH_DAY_YEAR = regex.compile(rf"\b{_MONTH}\s+([0-9]{{1,2}})(?:st|nd|rd|th)?,?\s*([0-9]{{4}})(?![0-9])", ANY_CASE)
#: what may stand between the characters of an identifier written out (at most three in a row)
_SEPARATORS = frozenset(" \t.-/_\u2013\u00a0")


def _skeleton(text: str) -> tuple[str, list[int]]:
    """The text's ASCII letters and digits, lower-cased, and where each came from; a run ends
    ("|") at anything but a few spaces, dots, dashes, slashes or underscores (a colon, a line
    break, a letter of another script): an identifier is found however a note spaces or
    punctuates it ("943/476/5919", "N01 00123456") with no pattern compiled for each child,
    and never across words or lines."""
    out: list[str] = []
    origin: list[int] = []
    gap = 0
    for i, c in enumerate(text):
        if c.isascii() and c.isalnum():
            out.append(c.lower())
            origin.append(i)
            gap = 0
        elif c in _SEPARATORS and gap < 3:
            gap += 1
        else:
            if out and out[-1] != "|":
                out.append("|")
                origin.append(i)
            gap = 0
    return "".join(out), origin


def _parse_date(value: str) -> tuple[int, int, int] | None:
    try:
        year, month, day = (int(part) for part in value.split("-"))
    except ValueError:
        return None
    return (year, month, day) if 1 <= month <= 12 and 1 <= day <= 31 else None


def _same_year(written: str, year: int) -> bool:
    return int(written) == (year if len(written) == 4 else year % 100) and len(written) in (2, 4)


class SubjectValueRecogniser(EntityRecognizer):
    """The subject's own identifiers, postcode and date of birth, wherever a note writes them,
    whatever the pattern recognisers make of their form ("NHS9434765919", "943/476/5919", an
    LA child id, "her dob is 21/12/2013"): an agreement that redacts free text but drops or
    generalises these must not find them in the text it is given. Dates only as dates (one
    separator throughout, or a month's name): never a time ("13:15") or a list of numbers."""

    def __init__(self, values: Iterable[tuple[str, str]]) -> None:
        self.forms: list[tuple[str, str]] = []  # (entity, skeleton)
        self.dates: set[tuple[int, int, int]] = set()
        for kind, value in values:
            entity = _VALUE_ENTITY.get(kind)
            if entity == DOB:
                parsed = _parse_date(value)
                if parsed is not None:
                    self.dates.add(parsed)
            elif entity is not None:
                form = _skeleton(value)[0]
                if len(form) >= 4 and "|" not in form:
                    self.forms.append((entity, form))
        kinds = {e for e, _ in self.forms} | ({DOB} if self.dates else set())
        super().__init__(supported_entities=sorted(kinds or {SUBJECT_ID}), name="SubjectValueRecogniser")

    @property
    def empty(self) -> bool:
        return not (self.forms or self.dates)

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: object = None) -> list[RecognizerResult]:
        found = []
        if self.forms:
            skeleton, origin = _skeleton(text)
            for entity, form in self.forms:
                at = skeleton.find(form)
                while at >= 0:
                    end = at + len(form)
                    # Not part of a longer run: a digit (or, where the value starts or ends with
                    # a letter, a letter) must not touch it in the text itself.
                    first, last = origin[at], origin[end - 1]
                    before = text[first - 1] if first else ""
                    after = text[last + 1] if last + 1 < len(text) else ""
                    if not (_touches(before, form[0]) or _touches(after, form[-1])):
                        found.append(RecognizerResult(entity, first, last + 1, 1.0))
                    at = skeleton.find(form, at + 1)
        if self.dates:
            found += [RecognizerResult(DOB, m.start(), m.end(), 1.0) for m in self._dates_in(text)]
        return found

    def _dates_in(self, text: str) -> list[regex.Match[str]]:
        hits = []
        for m in _NUMERIC_DATE.finditer(text):
            a, _, b, c = m.groups()
            day, month, year = (c, b, a) if len(a) == 4 else (a, b, c)
            if len(a) != 3 and len(day) <= 2 and self._is_birth(day, int(month), year):
                hits.append(m)
        for m in _DAY_MONTH_YEAR.finditer(text):
            day, name, year = m.groups()
            if self._is_birth(day, _MONTHS.index(name.lower()[:3]) + 1, year):
                hits.append(m)
        for m in _MONTH_DAY_YEAR.finditer(text):
            name, day, year = m.groups()
            if self._is_birth(day, _MONTHS.index(name.lower()[:3]) + 1, year):
                hits.append(m)
        return hits

    def _is_birth(self, day: str, month: int, year: str) -> bool:
        return any(int(day) == d and month == mo and _same_year(year, y) for y, mo, d in self.dates)


def _touches(neighbour: str, edge: str) -> bool:
    if not (neighbour.isascii() and neighbour.isalnum()):
        return False
    return neighbour.isdigit() if edge.isdigit() else True


def subject_value_recogniser(values: Iterable[tuple[str, str]]) -> EntityRecognizer | None:
    recogniser = SubjectValueRecogniser(values)
    return None if recogniser.empty else recogniser


def subject_name_recogniser(names: Iterable[str]) -> EntityRecognizer | None:
    recogniser = SubjectNameRecogniser(names)
    return recogniser if recogniser.names else None


def identifier_recognisers() -> list[PatternRecognizer]:
    return [NhsNumberRecogniser(), UpnRecogniser(), UkPhoneRecogniser(), EmailRecogniser(), PostcodeRecogniser()]
