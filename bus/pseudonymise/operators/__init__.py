"""Operators behind one interface, looked up by name (the Presidio pattern)."""

from __future__ import annotations

from bus.exceptions import ConfigurationError
from bus.pseudonymise.operators.base import Operator, OperatorContext
from bus.pseudonymise.operators.generalise import GeneraliseOperator, generalise_dob, generalise_postcode
from bus.pseudonymise.operators.seal import RevealOperator, SealOperator, reveal, seal
from bus.pseudonymise.operators.simple import DropOperator, KeepOperator
from bus.pseudonymise.operators.token import TokenOperator, canonical_identifier, token, tokens_for_all_keys

REGISTRY: dict[str, Operator] = {
    op.name: op
    for op in (TokenOperator(), SealOperator(), RevealOperator(), GeneraliseOperator(), DropOperator(),
               KeepOperator())
}


def get_operator(name: str) -> Operator:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigurationError(f"no operator named {name}") from None


__all__ = [
    "REGISTRY", "Operator", "OperatorContext", "canonical_identifier", "generalise_dob", "generalise_postcode",
    "get_operator", "reveal", "seal", "token", "tokens_for_all_keys",
]
