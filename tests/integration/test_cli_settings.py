"""The command line and the settings file: explicit options win; settings errors located."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bsc_rules.cli import build_parser, main
from bsc_rules.cli._common import load

AS_OF = "2017-06-30T23:59:59+08:00"


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "bsc-rules.toml"
    path.write_text(f'matcher = "python"\ndatabase = "{tmp_path / "office.db"}"\n')
    return path


@pytest.mark.parametrize(
    ("extra", "expected"),
    [([], "python"), (["--matcher", "auto"], "auto"), (["--matcher", "durable"], "durable")],
    ids=["settings", "explicit-auto", "explicit-durable"],
)
def test_an_explicit_matcher_overrides_the_settings_file(
    settings_file: Path, extra: list[str], expected: str
) -> None:
    """``--matcher auto`` is as explicit as any other value; without one the file decides."""
    argv = ["replay", "e.jsonl", "--until", AS_OF, "--maildir", "m", "--settings"]
    args = build_parser().parse_args([*argv, str(settings_file), *extra])
    assert load(args).matcher == expected


def test_settings_errors_are_named_as_such_with_file_line_and_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1; the message is about the settings file, not the rule files."""
    path = tmp_path / "bsc-rules.toml"
    path.write_text('sender = "bsc@datong.example.org"\n\n[smtp]\nprot = 25\n')
    events = tmp_path / "e.jsonl"
    events.write_bytes(b"")
    argv = ["replay", str(events), "--until", AS_OF, "--maildir", str(tmp_path / "mail")]
    code = main([*argv, "--settings", str(path)], stdout=io.StringIO())
    assert code == 1
    err = capsys.readouterr().err
    assert "1 problem in the settings" in err
    assert f"{path}:4: smtp.prot: unknown key; did you mean 'port'?" in err
    assert "rule files" not in err


def test_a_per_office_value_in_the_settings_file_stops_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1, naming the office file as the place of each value."""
    path = tmp_path / "bsc-rules.toml"
    path.write_text('[alerts]\nescalation_days = 2\n[recipients]\ndirector = ["d@x.org"]\n')
    events = tmp_path / "e.jsonl"
    events.write_bytes(b"")
    argv = ["replay", str(events), "--until", AS_OF, "--maildir", str(tmp_path / "mail")]
    code = main([*argv, "--settings", str(path)], stdout=io.StringIO())
    assert code == 1
    err = capsys.readouterr().err
    assert "2 problems in the settings" in err
    for line, key in ((1, "alerts"), (3, "recipients")):
        assert (
            f"{path}:{line}: {key}: per-office values live in the office file "
            f"(rules/office.yaml: {key}), not in bsc-rules.toml"
        ) in err
