"""The signature's canonical form is RFC 8785 whichever path computes it."""

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.provenance.signing import canonical

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_canonical_form_is_rfc8785(value: Any) -> None:
    try:
        expected = rfc8785.dumps(value)
    except Exception:
        try:
            canonical(value)
        except Exception:
            return
        raise AssertionError("canonical accepted a value RFC 8785 refuses") from None
    assert canonical(value) == expected
