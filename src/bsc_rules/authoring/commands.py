"""``bsc-rules test`` and ``bsc-rules whatif``: argument parsers and command bodies.

The CLI registers the parsers (:func:`add_test_parser`, :func:`add_whatif_parser`) and
dispatches to :func:`run_test` / :func:`run_whatif`; each returns the exit status.
``test`` exits 0 when every test passed, 1 when some failed, 2 for a bad test file.
"""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from rich.console import Console

from bsc_rules.authoring.ruletest import Runner, Suite, selector
from bsc_rules.authoring.testfile import shown
from bsc_rules.errors import UsageError
from bsc_rules.privacy import mask_text
from bsc_rules.rules.ruleset import default_rules_dir


def _out(console: Console, text: str = "", style: str | None = None) -> None:
    console.print(mask_text(text), highlight=False, markup=False, style=style, soft_wrap=True)


# ------------------------------------------------------------------ test


def add_test_parser(sub: Any) -> argparse.ArgumentParser:
    cmd: argparse.ArgumentParser = sub.add_parser(
        "test", help="run rule test files (rules/tests/*.test.yaml)"
    )
    cmd.add_argument(
        "paths", nargs="*", type=Path, help="test files or folders (default: the rules' tests/)"
    )
    cmd.add_argument(
        "--run", action="append", metavar="NAME", help="only tests whose name matches (regex)"
    )
    cmd.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML here")
    cmd.add_argument(
        "--rules", type=Path, help="run against this rule folder instead of each file's own"
    )
    return cmd


def _bad_arguments(command: str, text: str) -> int:
    """Say what is wrong with the arguments (on standard error); exit status 2."""
    errors = Console(stderr=True, soft_wrap=True)
    errors.print(mask_text(f"bsc-rules {command}: 錯誤：{text}"), highlight=False, markup=False)
    return 2


def run_test(args: argparse.Namespace, console: Console) -> int:
    try:
        only = selector(args.run)
    except re.error as exc:
        return _bad_arguments("test", f"--run: not a valid regular expression: {exc}")
    paths = args.paths or [(args.rules or default_rules_dir()) / "tests"]
    suite = Runner(args.rules).run(paths, only)
    print_suite(suite, console)
    if args.junit is not None:
        write_junit(suite, args.junit)
    return suite.exit_code


def print_suite(suite: Suite, console: Console) -> None:
    """Failures with their diffs, bad files, a summary and the uncovered KPIs."""
    for problem in suite.problems:
        _out(console, f"測試檔錯誤：{problem}", "bold red")
    for result in suite.results:
        if not result.passed:
            _out(console, f"失敗：{result.file.name}：{result.name}", "bold red")
            _out(console, result.explain())
    passed = sum(r.passed for r in suite.results)
    failed = len(suite.results) - passed
    _out(
        console,
        f"規則測試：{len(suite.results)} 項，通過 {passed} 項，失敗 {failed} 項"
        + (f"，測試檔錯誤 {len(suite.problems)} 處" if suite.problems else ""),
        "green" if suite.exit_code == 0 else "red",
    )
    for path, kpis in suite.uncovered().items():
        folder = shown(Path(path))
        if kpis:
            _out(console, f"未受測試涵蓋的KPI（{folder}）：{', '.join(kpis)}", "yellow")
        else:
            _out(console, f"KPI 均有測試涵蓋（{folder}）。")


def junit_xml(suite: Suite) -> ET.Element:
    """The results as JUnit XML: one ``testsuite`` per file, one ``testcase`` per test."""
    root = ET.Element("testsuites", name="bsc-rules test")
    by_file: dict[str, ET.Element] = {}
    for result in suite.results:
        name = str(result.file)
        if name not in by_file:
            by_file[name] = ET.SubElement(root, "testsuite", name=name)
        case = ET.SubElement(
            by_file[name],
            "testcase",
            classname=name,
            name=result.name,
            time=f"{result.seconds:.3f}",
        )
        if not result.passed:
            kind = "error" if result.error is not None else "failure"
            text = mask_text(result.explain())
            ET.SubElement(case, kind, message=text.splitlines()[0]).text = text
    for problem in suite.problems:
        bad = ET.SubElement(root, "testsuite", name=problem.path)
        case = ET.SubElement(bad, "testcase", classname=problem.path, name="load")
        ET.SubElement(case, "error", message=str(problem)).text = str(problem)
    for element in root:
        cases = element.findall("testcase")
        element.set("tests", str(len(cases)))
        element.set("failures", str(sum(c.find("failure") is not None for c in cases)))
        element.set("errors", str(sum(c.find("error") is not None for c in cases)))
    return root


def write_junit(suite: Suite, path: Path) -> None:
    tree = ET.ElementTree(junit_xml(suite))
    ET.indent(tree)
    try:
        tree.write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        msg = f"--junit: cannot write {path}: {exc.strerror or exc}"
        raise UsageError(msg) from None


# ------------------------------------------------------------------ whatif


def add_whatif_parser(sub: Any) -> argparse.ArgumentParser:
    from bsc_rules.calendar import parse_instant

    def instant(text: str) -> Any:
        try:
            return parse_instant(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    cmd: argparse.ArgumentParser = sub.add_parser(
        "whatif", help="replay events under two rule sets and compare"
    )
    cmd.add_argument("events", type=Path, help="CloudEvents JSON Lines file")
    cmd.add_argument(
        "--rules", type=Path, action="append", required=True, help="rule folder (give two: A, B)"
    )
    cmd.add_argument(
        "--until", type=instant, help="RFC 3339 instant (default: last event's month end)"
    )
    cmd.add_argument("--format", choices=("table", "json", "html"), default="table")
    cmd.add_argument("--out", type=Path, help="write the output to this file")
    cmd.add_argument(
        "--settings", type=Path, help="settings file (sender, tick); recipients: the office files"
    )
    return cmd


def run_whatif(args: argparse.Namespace, console: Console) -> int:
    import orjson

    from bsc_rules.authoring.whatif import what_if
    from bsc_rules.authoring.whatif_view import print_table, render_html
    from bsc_rules.calendar import to_us
    from bsc_rules.privacy import mask_value

    if len(args.rules) != 2:
        count = len(args.rules)
        return _bad_arguments("whatif", f"--rules: give two rule folders (A, B), got {count}")
    until = None if args.until is None else to_us(args.until)
    result = what_if(args.events, args.rules[0], args.rules[1], until, args.settings)
    if args.format == "table" and args.out is None:
        print_table(result, console)
        return 0
    if args.format == "json":
        text = orjson.dumps(mask_value(result.as_dict()), option=orjson.OPT_INDENT_2).decode()
    elif args.format == "html":
        text = render_html(result)
    else:
        rec = Console(record=True, width=160, file=io.StringIO())
        print_table(result, rec)
        text = rec.export_text()
    if args.out is None:
        console.file.write(text + "\n")
    else:
        args.out.write_text(text + "\n", encoding="utf-8")
        _out(console, f"已寫入假設分析：{args.out}")
    return 0
