"""Free-text redaction: typed placeholders, checksums respected, the people around the child
found, and recall measured on a corpus the rules were not written against."""

from pathlib import Path

import pytest

from bench.redaction import load_corpus, make_corpus, measure
from bus.redaction import find_spans, redact

CORPUS = Path(__file__).parents[1] / "data" / "redaction"


@pytest.mark.parametrize(("text", "expected"), [
    ("NHS no 943 476 5919 seen", "NHS no [NHS_NUMBER] seen"),
    ("nhs 943-476-5919.", "nhs [NHS_NUMBER]."),
    ("Call 07700 900123 after 4pm", "Call [PHONE] after 4pm"),
    ("Tel +44 (0)7700 900123.", "Tel [PHONE]."),
    ("Landline (01632) 960001", "Landline [PHONE]"),
    ("Office 020 7946 0123", "Office [PHONE]"),
    ("Email ava.t@example.org now", "Email [EMAIL] now"),
    ("Lives at NS1 4AB today", "Lives at [POSTCODE] today"),
    ("lives at ns14ab", "lives at [POSTCODE]"),
    ("Staying at 14 Acacia Road, Northam with an aunt.", "Staying at [ADDRESS] with an aunt."),
    ("Moved to Flat 3, Willow Court, 18 Station Road.", "Moved to [ADDRESS]."),
    ("Seen with sibling (DOB 03/04/2015) at clinic.", "Seen with sibling (DOB [DATE_OF_BIRTH]) at clinic."),
    ("born 3rd April 2015 in Leeds", "born [DATE_OF_BIRTH] in Leeds"),
])
def test_each_kind_is_replaced_by_its_placeholder(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("she lives at 42 willow close with mum", "she lives at [ADDRESS] with mum"),
    ("staying at flat 3, 18 station road since june", "staying at [ADDRESS] since june"),
    ("moved to 7 high st last week", "moved to [ADDRESS] last week"),
    ("found at 12 main road", "found at [ADDRESS]"),
    # From a second reader: mixed case, capitals, short and possessive words, more street words,
    # and the town where the clause ends.
    ("seen at 42 Willow close today", "seen at [ADDRESS] today"),
    ("LIVES AT 42 WILLOW CLOSE", "LIVES AT [ADDRESS]"),
    ("at 42 st johns road", "at [ADDRESS]"),
    ("at 42 king's road", "at [ADDRESS]"),
    ("moved to 5 oak row", "moved to [ADDRESS]"),
    ("moved to 7 windmill hill", "moved to [ADDRESS]"),
    ("she lives at 42 willow close, leeds.", "she lives at [ADDRESS]."),
    ("at 42 willow close, mum said", "at [ADDRESS], mum said"),
])
def test_a_street_address_written_in_lower_case_is_redacted(text: str, expected: str) -> None:
    """Noticed in review: notes typed in a hurry lose their capitals, and the address pattern
    needed them, so "42 willow close" went to the recipients as written."""
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "we drove 2 miles down the road", "took 2 buses down the road", "waited 10 minutes in the close",
    "his 2 older sisters drive him to school", "her 2 friends walk home", "a 20 minute walk",
    "ran 5 laps round the square", "he went 3 times to the shop on the way",
    # From a second reader: a hearing's date, times and groups of people.
    "hearing on 12 may court list", "listed 3 march court", "a 5 min walk", "a 20 second walk", "2 mates walk",
    "3 youths walk", "2 lads drive", "2 cans way",
])
def test_a_count_before_a_street_word_in_lower_case_is_not_taken_for_an_address(text: str) -> None:
    assert redact(text) == text


def test_upn_with_a_valid_check_letter_is_redacted() -> None:
    from schemas.identifiers import upn_check_letter

    upn = upn_check_letter("999123456789") + "999123456789"
    assert redact(f"UPN {upn} on roll") == "UPN [UPN] on roll"


def test_subject_names_are_redacted_in_any_case_with_possessives_as_one_name() -> None:
    text = "AVA TESTWOOD's mum said ava was scared; Ava Testwood left."
    assert redact(text, ["Ava", "Testwood"]) == "[PERSON] mum said [PERSON] was scared; [PERSON] left."


@pytest.mark.parametrize("name", ["A\u00adva", "Av\u200ba", "\ufeffAva"])
def test_a_subject_name_holding_an_invisible_character_is_still_redacted(name: str) -> None:
    """Found in review: a soft hyphen pasted into the structured name split it into words no
    text holds, and the child's name went to sg.events unredacted."""
    assert redact("ava was upstairs, Ava's brother came down", [name]) == \
        "[PERSON] was upstairs, [PERSON] brother came down"


def test_people_around_the_child_are_redacted_not_only_the_subject() -> None:
    text = ('Ava said "my dad Stuart threw mum down the stairs". Mum Leanne MORROW was seen by '
            'PC Hollis. Stuart left before police arrived.')
    out = redact(text, ["Ava", "Testwood"])
    for name in ("Ava", "Stuart", "Leanne", "MORROW", "Hollis"):
        assert name not in out, out
    assert out.startswith('[PERSON] said "my dad [PERSON] threw mum'), out  # relations are kept


@pytest.mark.parametrize(("text", "names", "hidden"), [
    ("Leanne Morrow's partner was there", [], ["Leanne", "Morrow"]),
    ("STUART REID ASSAULTED LEANNE MORROW IN FRONT OF AVA'S MUM", ["Ava", "Testwood"],
     ["STUART", "REID", "LEANNE", "MORROW", "AVA"]),
    ("o\u2019neill said he was fine", ["Kai", "O'Neill"], ["neill"]),
    ("we met zoe\u0308 at home", ["Zo\u00eb", "Test"], ["zoe"]),
    ("dad \u0141ukasz was present; dad McDonald and dad MacKenzie came", [], ["ukasz", "McDonald", "MacKenzie"]),
    ("MORROW, Leanne (mum) attended; SMITH John was seen", [], ["MORROW", "Leanne", "SMITH", "John"]),
    ("Ava, Stuart and Leanne were at home", ["Ava", "Testwood"], ["Stuart", "Leanne"]),
    ("dad: Stuart; mum - Leanne; Officer 3021 Hollis attended", [], ["Stuart", "Leanne", "Hollis"]),
    ("Nana said she was tired", ["Nana", "Mensah"], ["Nana"]),
    ("sister April and dad Christian Park", [], ["April", "Christian", "Park"]),
    ("Test\u00adwood and Ava\u200d said", ["Ava", "Testwood"], ["Test", "wood", "Ava"]),
    ("\uff21\uff36\uff21 was scared", ["Ava", "Testwood"], ["\uff21\uff36\uff21"]),
    ("handle ava_testwood07 and Testwood2", ["Ava", "Testwood"], ["ava", "testwood", "Testwood"]),
])
def test_names_are_found_in_the_forms_real_notes_use(text: str, names: list[str], hidden: list[str]) -> None:
    out = redact(text, names)
    assert not [h for h in hidden if h in out], out


@pytest.mark.parametrize(("text", "expected"), [
    ("NHS 999.909.2667 and 943  476  5919", "NHS [NHS_NUMBER] and [NHS_NUMBER]"),
    ("call 0044 113 496 0000 or 07700\u2013900\u2013123", "call [PHONE] or [PHONE]"),
    ("UPN R999 0115 24493 on roll; postcode SW1A-1AA", "UPN [UPN] on roll; postcode [POSTCODE]"),
])
def test_identifiers_with_odd_separators_are_still_found(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_relation_words_stay_when_the_name_after_them_goes() -> None:
    assert redact("Mum Sarah Jones said she would call.") == "Mum [PERSON] said she would call."


def test_a_long_run_of_punctuation_is_analysed_quickly_and_left_alone() -> None:
    text = "=" * 2000  # spaCy's tokenizer is quadratic here; the analysed copy blanks such runs
    assert redact(text) == text


def test_a_pattern_that_times_out_refuses_the_text_rather_than_pass_it_half_redacted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from presidio_analyzer import pattern_recognizer

    from bus.redaction.redactor import RedactionFailed

    monkeypatch.setattr(pattern_recognizer, "REGEX_TIMEOUT_SECONDS", 1e-9)
    with pytest.raises(RedactionFailed):
        redact("NHS 943 476 5919, phone 07700 900123, Flat 3, 18 Station Road, Leeds. dad Stuart.")


def test_incident_dates_references_and_roles_are_kept() -> None:
    text = "Seen on 12/03/2026 at 14:30 by the school nurse; crime ref NSP/24/118823; GP informed."
    assert redact(text) == text


def test_numbers_that_fail_their_checksums_or_formats_are_left_alone() -> None:
    text = "Case 9434765918, ref NSP-1234567, on 12/03/2026 at 14:30, Year 6, 07700 90012"
    assert find_spans(text) == []


def test_recall_on_the_generated_corpus_is_at_least_99_5_percent() -> None:
    report = measure(make_corpus(1000, seed=11))
    assert sum(report.planted.values()) >= 1000
    assert report.recall >= 0.995, report.lines()
    assert report.precision >= 0.85, report.lines()


def test_held_out_corpus_meets_the_issue_14_targets() -> None:
    """The held-out part of the corpus (never read while writing the rules): recall >= 0.95 for
    people, addresses and dates of birth, >= 0.995 for identifiers, precision >= 0.85."""
    report = measure(load_corpus(CORPUS / "corpus-heldout.jsonl"))
    recall = report.recall_by_kind()
    assert len(report.planted) == 8 and sum(report.planted.values()) >= 600, report.lines()
    for kind in ("PERSON", "ADDRESS", "DOB"):
        assert recall[kind] >= 0.95, report.lines()
    for kind in ("NHS_NUMBER", "UPN", "PHONE", "EMAIL", "POSTCODE"):
        assert recall[kind] >= 0.995, report.lines()
    assert report.precision >= 0.85, report.lines()


def test_a_long_list_of_names_makes_spans_in_proportion_not_by_the_square() -> None:
    """Found in review: each name of a comma list walked the rest of it, so 390 names made
    ~80,000 spans and one 2,000-character field took 0.6 s (a batch of such events, minutes)."""
    import regex

    from bus.redaction.redactor import Span, _people

    text = "Seen with " + "Zed, " * 390 + "and Amy."
    found = [Span(m.start(), m.end(), "PERSON") for m in regex.finditer("Zed", text)]
    spans = _people(text, found)
    assert len(spans) < 4 * len(found)
    short = "Seen with Zed, Bob and Amy."  # the list's next names are still found
    listed = _people(short, [Span(10, 13, "PERSON")])
    assert {short[s.start:s.end] for s in listed} >= {"Zed", "Bob", "Amy"}


_CHILD = [("nhs_number", "9434765919"), ("la_child_id", "N01-00123456"), ("police_person_id", "NSP/123456"),
          ("date_of_birth", "2013-12-21"), ("postcode", "NS3 1AB")]


@pytest.mark.parametrize(("text", "expected"), [
    ("Child (LA id N01-00123456, PNC NSP/123456) seen.", "Child (LA id [ID], PNC [ID]) seen."),
    ("NHS9434765919 / 943_476_5919 / 9 4 3 4 7 6 5 9 1 9", "NHS[NHS_NUMBER] / [NHS_NUMBER] / [NHS_NUMBER]"),
    ("her dob is 21/12/2013; birthday 21st December 2013 (21.12.13)",
     "her dob is [DATE_OF_BIRTH]; birthday [DATE_OF_BIRTH] ([DATE_OF_BIRTH])"),
    ("lives ns31ab now", "lives [POSTCODE] now"),
    ("seen 21/12/2014 re case 123456 and ref 19434765919", "seen 21/12/2014 re case 123456 and ref 19434765919"),
])
def test_the_subjects_own_identifiers_and_dates_are_redacted_however_written(text: str, expected: str) -> None:
    """Found in review: a note holding the child's LA child id, police id, a date of birth after
    no trigger word, or an NHS number without a space before it kept them in the redacted copy,
    which an agreement that drops or generalises them still delivers. Other dates and numbers
    are left alone."""
    assert redact(text, ["Ava"], _CHILD) == expected


@pytest.mark.parametrize("text", ["Police attended at 13:15", "Rated 1/3; 15 minutes later", "Seen at 1315.", "13/15",
                                  "Visit 1.\n\n\u0639\u0627\u0626\u0644\u0629 3 15 \u0633\u0646\u0629"])
def test_times_and_number_lists_are_not_taken_for_the_childs_date_of_birth(text: str) -> None:
    """Found in a second reading: dates matched on the text's bare digits, so "13:15" became
    [DATE_OF_BIRTH] for a child born 1 March 2015, and the placeholder gave the date away to a
    partner given only the year and month."""
    assert redact(text, ["Ava"], [("date_of_birth", "2015-03-01")]) == text


def test_the_childs_date_of_birth_is_found_in_the_forms_dates_are_written() -> None:
    text = "born 1/3/15, 01.03.2015, 1st March 2015, March 1st, 2015 and 2015-03-01"
    assert redact(text, ["Ava"], [("date_of_birth", "2015-03-01")]) == (
        "born [DATE_OF_BIRTH], [DATE_OF_BIRTH], [DATE_OF_BIRTH], [DATE_OF_BIRTH] and [DATE_OF_BIRTH]")


def test_an_identifier_is_not_matched_across_lines() -> None:
    assert redact("id N01\n00123456", [], [("la_child_id", "N01-00123456")]) == "id N01\n00123456"


@pytest.mark.parametrize("mark", ["\u200f", "\u061c", "\U000e0041"])
def test_a_subject_name_holding_a_direction_mark_is_redacted_where_the_text_holds_it_too(mark: str) -> None:
    """Found in a second reading: the name was read without its format characters but the text
    with them, so a name holding a right-to-left mark went unredacted."""
    name = f"Zu{mark}bair"
    assert redact(f"Seen with {name} at school; {name} was upset.", [name]) == \
        "Seen with [PERSON] at school; [PERSON] was upset."
