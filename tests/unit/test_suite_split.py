"""How `make test` splits the suite over its two processes (tests/conftest.py)."""

from __future__ import annotations

from tests.conftest import OWN_STACKS, SHARED_STACK, scope_of


def test_every_shared_stack_module_is_one_unit_of_work_and_the_rest_are_whole_modules() -> None:
    assert scope_of("tests/integration/test_pipeline.py::test_x") == SHARED_STACK
    assert scope_of("tests/integration/test_zz_crash.py::test_y[1]") == SHARED_STACK
    assert scope_of("tests/integration/test_zz_broker_loss.py::test_z") == "tests/integration/test_zz_broker_loss.py"
    assert scope_of("tests/unit/test_ingest.py::test_a[b::c]") == "tests/unit/test_ingest.py"


def test_modules_listed_with_stacks_of_their_own_exist() -> None:
    from pathlib import Path

    root = Path(__file__).parents[2]
    assert all((root / module).is_file() for module in OWN_STACKS)
