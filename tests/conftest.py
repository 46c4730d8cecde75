"""How `make test` splits the suite over two processes (pytest-xdist, `-n 2`): every module that
uses the session's shared stack (tests/integration/conftest.py) runs on one worker, in collection
order, so the stack starts once and the crash tests (named zz) still run after the others that use
it; every other module runs whole (its module fixtures start once) on whichever worker is free."""

from __future__ import annotations

from typing import Any

import pytest

#: integration modules that start stacks of their own and never use the shared one: they run
#: beside the shared stack's modules, on the other worker
OWN_STACKS = frozenset({
    "tests/integration/test_bench_smoke.py",
    "tests/integration/test_demo.py",
    "tests/integration/test_worker_shutdown.py",
    "tests/integration/test_zz_broker_loss.py",
})
SHARED_STACK = "shared stack"


def scope_of(nodeid: str) -> str:
    """The unit of work one xdist worker takes whole: the shared stack's modules, or one module."""
    module = nodeid.split("::", 1)[0]
    if module.startswith("tests/integration/") and module not in OWN_STACKS:
        return SHARED_STACK
    return module


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A module listed as having a stack of its own must not use the shared one: on the other
    worker it would start a second shared stack beside the first."""
    wrong = sorted({i.nodeid.split("::", 1)[0] for i in items
                    if "bus" in getattr(i, "fixturenames", ()) and scope_of(i.nodeid) != SHARED_STACK})
    if wrong:
        raise pytest.UsageError(f"{', '.join(wrong)} use the shared stack: remove them from OWN_STACKS in "
                                "tests/conftest.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # xdist's own `--dist loadgroup` cannot be used: with pytest 9 its group marks never reach
    # the test ids it schedules by, so tests of one group ran on both workers.
    from xdist.scheduler import LoadScopeScheduling

    class SharedStackScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return SharedStackScheduling(config, log)
