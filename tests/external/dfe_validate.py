"""Runs inside the DfE validators' own environment (never imported by the project): checks a CIN
census XML or SSDA903 CSV tables with csc-validator-be-cin / csc-validator-be-903 through their
Python APIs (their command lines import pytest, which they do not declare) and prints the issues
as JSON lines: {"child": ..., "rule": ..., "field": ...}.

    python dfe_validate.py cin RULESET FILE.xml
    python dfe_validate.py 903 COLLECTION_YEAR LA_ONS_CODE FILE.csv [FILE.csv ...]
"""

import importlib
import json
import logging
import sys
import xml.etree.ElementTree as ET


def cin(ruleset: str, path: str) -> list[dict[str, str]]:
    from cin_validator import cin_validator

    data = cin_validator.process_data(cin_validator.convert_data(ET.parse(path).getroot()))  # noqa: S314
    registry = importlib.import_module(f"cin_validator.rules.{ruleset}").registry
    issues = cin_validator.CinValidator(data, registry).full_issue_df
    return [{"child": str(row.get("LAchildID", "")), "rule": str(row.get("rule_code", "")),
             "field": str(row.get("columns_affected", ""))} for _, row in issues.iterrows()]


def lac(year: str, la: str, paths: list[str]) -> list[dict[str, str]]:
    logging.disable(logging.CRITICAL)
    from lac_validator import lac_validator
    from lac_validator.report import Report
    from lac_validator.rules.ruleset_utils import get_year_ruleset
    from lac_validator.utils import process_uploaded_files

    registry = get_year_ruleset(year)
    validator = lac_validator.LacValidator(metadata={"collectionYear": year, "localAuthority": la},
                                           files=process_uploaded_files({"This year": paths}), registry=registry)
    if not any(c.startswith("ERR_") for t, d in validator.ds_results.items() if t != "metadata" for c in d.columns):
        return []  # create_issue_df raises when nothing was flagged
    report = Report(validator.ds_results, registry)
    issues = lac_validator.create_issue_df(report.report, report.error_report)
    return [{"child": str(row.get("child_id", "")), "rule": str(row.get("rule_code", "")),
             "field": str(row.get("columns_affected", ""))} for _, row in issues.iterrows()]


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    found = cin(args[0], args[1]) if kind == "cin" else lac(args[0], args[1], args[2:])
    for issue in found:
        print(json.dumps(issue))
