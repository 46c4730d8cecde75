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


_MISPLACED = pytest.StashKey[str]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A module listed as having a stack of its own must not use the shared one: on the other
    worker it would start a second shared stack beside the first. Its tests fail, saying so."""
    for item in items:
        if "bus" in getattr(item, "fixturenames", ()) and scope_of(item.nodeid) != SHARED_STACK:
            item.stash[_MISPLACED] = (f"{item.nodeid.split('::', 1)[0]} uses the shared stack: remove it from "
                                      "OWN_STACKS in tests/conftest.py")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Failing here, before any fixture starts, and not at collection: under xdist a collection
    # error in a worker reaches the controller without its message.
    if _MISPLACED in item.stash:
        pytest.fail(item.stash[_MISPLACED], pytrace=False)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # xdist's own `--dist loadgroup` cannot be used: with pytest 9 its group marks never reach
    # the test ids it schedules by, so tests of one group ran on both workers.
    from xdist.scheduler import LoadScopeScheduling

    class SharedStackScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return SharedStackScheduling(config, log)
