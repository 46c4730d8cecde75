"""The one interface every pseudonymisation operator implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from bus.exceptions import ConfigurationError
from bus.pseudonymise.keyring import Keyring


@dataclass(frozen=True)
class OperatorContext:
    """What an operator may need besides the value: keys, the field's kind, the recipient's
    linkage domain, and associated data for sealing."""

    keyring: Keyring
    kind: str = ""
    domain: str = ""
    associated: str = ""


class Operator(ABC):
    """`validate` checks configuration once; `operate` is applied many times."""

    name: ClassVar[str]
    params: ClassVar[frozenset[str]] = frozenset()

    def validate(self, params: Mapping[str, str]) -> None:
        unknown = set(params) - self.params
        if unknown:
            raise ConfigurationError(f"operator {self.name} takes no parameter {sorted(unknown)[0]}")

    @abstractmethod
    def operate(self, value: Any, ctx: OperatorContext, params: Mapping[str, str]) -> Any:
        """The transformed value; None means the field is dropped."""
