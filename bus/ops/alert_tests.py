"""Keep the promtool unit tests' expected annotations in step with the alert rules' runbook text.

promtool compares every annotation of an expected alert, so each test would repeat its rule's
runbook word for word. The tests file states only the labels; `python -m bus.ops.alert_tests`
fills in the annotations from the rules (label templates rendered) and rewrites the file.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from bus.ops.monitoring import deploy_dir

RULES = deploy_dir() / "prometheus" / "rules" / "sgbus.yml"
TESTS = deploy_dir() / "prometheus" / "tests" / "sgbus_test.yml"
#: alerts over days, without a `for:`: evaluated hourly (every 15 s, promtool took minutes)
LONG_TESTS = deploy_dir() / "prometheus" / "tests" / "sgbus_long_test.yml"
TEST_FILES = (TESTS, LONG_TESTS)
HEADER = """\
# promtool unit tests of ../rules/sgbus.yml: firing and not firing, for every alert
# (sgbus_test.yml evaluates every 15 s; sgbus_long_test.yml, for alerts over days, hourly).
# Run: promtool test rules deploy/prometheus/tests/*.yml (make test runs it).
# exp_annotations are filled in from the rules by `python -m bus.ops.alert_tests` (a test
# fails if they are out of date): edit the labels and series, then run it.
"""
_LABEL = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


def render(template: str, labels: dict[str, str]) -> str:
    out = _LABEL.sub(lambda m: labels.get(m.group(1), ""), template)
    if "{{" in out:
        raise ValueError(f"only {{{{ $labels.NAME }}}} is supported in annotations: {template!r}")
    return out


def rules_by_alert(rules_doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rules_doc["groups"] for r in g["rules"] if "alert" in r}


def fill(tests_doc: dict[str, Any], rules_doc: dict[str, Any]) -> dict[str, Any]:
    rules = rules_by_alert(rules_doc)
    for test in tests_doc["tests"]:
        for case in test.get("alert_rule_test", []):
            rule = rules[case["alertname"]]
            for alert in case.get("exp_alerts") or []:
                labels = {**{k: str(v) for k, v in alert.get("exp_labels", {}).items()},
                          "alertname": case["alertname"]}
                alert["exp_annotations"] = {k: render(v, labels) for k, v in rule.get("annotations", {}).items()}
    return tests_doc


def filled_text(tests_path: Path = TESTS, rules_path: Path = RULES) -> str:
    tests_doc = yaml.safe_load(tests_path.read_text())
    rules_doc = yaml.safe_load(rules_path.read_text())
    return HEADER + yaml.safe_dump(fill(tests_doc, rules_doc), sort_keys=False, width=120, allow_unicode=True)


def main() -> int:
    for path in TEST_FILES:
        path.write_text(filled_text(path))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
