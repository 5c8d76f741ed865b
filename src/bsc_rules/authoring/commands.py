"""``bsc-rules test`` and ``bsc-rules whatif``: the command bodies.

The CLI (cli/authoring_cmds.py) declares and checks the arguments and calls
:func:`run_test` / :func:`run_whatif`; each returns the exit status.
``test`` exits 0 when every test passed, 1 when some failed, 2 for a bad test file.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
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


def run_test(args: argparse.Namespace, console: Console) -> int:
    only = selector(args.run)  # the patterns were checked with the arguments
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


def run_whatif(args: argparse.Namespace, console: Console) -> int:
    import orjson

    from bsc_rules.authoring.whatif import what_if
    from bsc_rules.authoring.whatif_view import print_table, render_html
    from bsc_rules.calendar import to_us
    from bsc_rules.privacy import mask_value

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
