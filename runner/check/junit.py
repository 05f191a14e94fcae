"""JUnit XML for `sdbake check`, the format CI systems (GitHub, GitLab, Jenkins) show as test results.

One <testcase> per case: a regression is a <failure>, a recipe that does not load or render and an
unreadable image are an <error>.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from sdbake.runner.check.run import CheckResult


def junit_tree(result: CheckResult) -> ET.ElementTree:
    failures = sum(1 for c in result.cases if c.status == "fail")
    errors = sum(1 for c in result.cases if c.status == "error")
    suites = ET.Element("testsuites", name="sdbake check", tests=str(len(result.cases)),
                        failures=str(failures), errors=str(errors), time=f"{result.seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="sdbake check", tests=str(len(result.cases)),
                          failures=str(failures), errors=str(errors), skipped="0", time=f"{result.seconds:.3f}")
    for case in result.cases:
        element = ET.SubElement(suite, "testcase", classname=f"sdbake.check.{case.name}",
                                name=case.output or Path(case.recipe).name, file=case.recipe,
                                time=f"{case.seconds:.3f}")
        if case.failed:
            tag = "failure" if case.status == "fail" else "error"
            summary = " ".join(case.message.split())[:300] or case.status
            detail = ET.SubElement(element, tag, message=summary, type=case.status)
            detail.text = "\n".join([case.message, case.metrics.summary() if case.metrics else "",
                                     case.recipe_diff]).strip()
        elif case.message:
            ET.SubElement(element, "system-out").text = case.message
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(result: CheckResult, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(result).write(path, encoding="utf-8", xml_declaration=True)
    return path
