"""Office settings: the file, the environment, and secrets only from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from bsc_rules.errors import RuleFileError, SettingsError, UsageError
from bsc_rules.settings import key_lines, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "bsc-rules.example.toml"


def test_shipped_example_holds_process_values_only() -> None:
    """The example sets the process (database, sender, SMTP); no per-office value."""
    s = load_settings(EXAMPLE)
    assert (s.sender, s.smtp.host, s.tick_minutes) == (
        "bsc-rules@datong.example.org",
        "127.0.0.1",
        60,
    )
    text = EXAMPLE.read_text(encoding="utf-8")
    assert not {"recipients", "alerts", "digest", "lists"} & set(key_lines(text))


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("sender = 'a@b.org'\n\n[recipients]\nregistration = ['r@x.org']\n", "recipients", 3),
        ("[alerts]\nescalation_days = 2\n", "alerts", 1),
        ("[smtp]\nport = 25\n[digest]\nday = 1\nhour = 8\n", "digest", 3),
        ("lists = {hour = 7}\n", "lists", 1),
        ("deadlines = 'calendar'\n", "deadlines", 1),
    ],
    ids=["recipients", "alerts", "digest", "lists", "deadlines"],
)
def test_a_per_office_value_in_the_settings_file_names_its_place(
    tmp_path: Path, text: str, key: str, line: int
) -> None:
    """recipients, alerts, lists, digest, deadlines: the office file's, named with its path."""
    path = tmp_path / "bsc-rules.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:{line}: {key}: per-office values live in the office file "
        f"(rules/office.yaml: {key}), not in bsc-rules.toml"
    ]


def test_the_named_office_file_follows_the_rules_setting(tmp_path: Path) -> None:
    """With ``rules = DIR``, the message names DIR/office.yaml."""
    path = tmp_path / "bsc-rules.toml"
    path.write_text("rules = 'offices/datong'\n[recipients]\ndirector = ['d@x.org']\n")
    with pytest.raises(SettingsError, match=r"\(offices/datong/office.yaml: recipients\)"):
        load_settings(path)


def test_a_per_office_value_in_the_environment_names_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BSC_RULES_RECIPIENTS__…, BSC_RULES_DIGEST__…: an error, not silently ignored."""
    monkeypatch.setenv("BSC_RULES_RECIPIENTS__REGISTRATION", '["r@x.org"]')
    monkeypatch.setenv("BSC_RULES_DIGEST__HOUR", "9")
    monkeypatch.setenv("BSC_RULES_SMTP__PORT", "2525")  # a process value: fine
    path = tmp_path / "bsc-rules.toml"
    path.write_text("")
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert [str(p) for p in info.value.problems] == [
        "environment: BSC_RULES_DIGEST__HOUR: per-office values live in the office file "
        "(rules/office.yaml: digest), not in the environment",
        "environment: BSC_RULES_RECIPIENTS__REGISTRATION: per-office values live in the "
        "office file (rules/office.yaml: recipients), not in the environment",
    ]


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """BSC_RULES_* variables win over the file, nested keys with a double underscore."""
    monkeypatch.setenv("BSC_RULES_SMTP__PORT", "2525")
    monkeypatch.setenv("BSC_RULES_TICK_MINUTES", "15")
    monkeypatch.setenv("BSC_RULES_SMTP_PASSWORD", "s3cret")
    s = load_settings(EXAMPLE)
    assert (s.smtp.port, s.tick_minutes) == (2525, 15)
    assert s.smtp_password is not None
    assert s.smtp_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_password_in_a_file_is_refused(tmp_path: Path) -> None:
    """A password written in the settings file is refused with a pointer to the variable."""
    path = tmp_path / "bsc-rules.toml"
    path.write_text('[smtp]\nhost = "mail"\npassword = "oops"\n')
    with pytest.raises(SettingsError, match="BSC_RULES_SMTP_PASSWORD") as info:
        load_settings(path)
    assert str(info.value.problems[0]).startswith(f"{path}:3: smtp.password: ")


def test_ack_secret_only_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acknowledgement links' secret is refused in a file; read from the environment;
    a public address must be an http(s) URL."""
    path = tmp_path / "bsc-rules.toml"
    path.write_text('public_url = "https://kpi.dthr.example"\nack_secret = "oops"\n')
    with pytest.raises(SettingsError, match="BSC_RULES_ACK_SECRET") as info:
        load_settings(path)
    assert str(info.value.problems[0]).startswith(f"{path}:2: ack_secret: ")
    path.write_text('public_url = "https://kpi.dthr.example"\n')
    monkeypatch.setenv("BSC_RULES_ACK_SECRET", "s3cret")
    settings = load_settings(path)
    assert settings.ack_secret is not None
    assert settings.ack_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    path.write_text('public_url = "kpi.dthr.example"\n')
    with pytest.raises(SettingsError, match="public_url"):
        load_settings(path)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[smtp]\nport = 0\n", "smtp.port"),
        ("[smtp]\nsecurity = 'ssl'\n", "smtp.security"),
        ("sender = 'not-an-address'\n", "sender"),
        ("tick_minuts = 5\n", "tick_minuts"),
    ],
    ids=["port", "security", "address", "misspelt"],
)
def test_bad_settings_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    """Invalid settings report the file and the field."""
    path = tmp_path / "bsc-rules.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert not isinstance(info.value, RuleFileError)
    assert "problems in the rule files" not in str(info.value)
    assert any(p.field == field and p.path == str(path) for p in info.value.problems)


def test_missing_settings_file(tmp_path: Path) -> None:
    """An explicit settings file that does not exist is an error."""
    with pytest.raises(UsageError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_settings_errors_are_located_with_a_did_you_mean(tmp_path: Path) -> None:
    """Each problem names file:line: key; an unknown key gets the closest known one."""
    path = tmp_path / "bsc-rules.toml"
    path.write_text(
        '# office settings\nsender = "bsc@datong.example.org"\ntick_minuts = 5\n\n'
        '[smtp]\nhost = "mail"\nprot = 25\n\n[digest]\nhour = 30\n'
    )  # the digest is the office file's: named there
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    lines = sorted(str(p) for p in info.value.problems)
    assert lines == [
        f"{path}:3: tick_minuts: unknown key; did you mean 'tick_minutes'?",
        f"{path}:7: smtp.prot: unknown key; did you mean 'port'?",
        f"{path}:9: digest: per-office values live in the office file "
        "(rules/office.yaml: digest), not in bsc-rules.toml",
    ]
    assert str(info.value).startswith("3 problems in the settings:")


def test_invalid_toml_is_a_located_settings_error(tmp_path: Path) -> None:
    """A file that is not TOML names its line and column."""
    path = tmp_path / "bsc-rules.toml"
    path.write_text('sender = "a@b.c"\n[smtp\nport = 25\n')
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    problem = info.value.problems[0]
    assert (problem.path, problem.line) == (str(path), 2)
    assert "not valid TOML" in problem.message


def test_key_lines_follow_tables_and_dotted_keys() -> None:
    """The scanner finds keys under tables, dotted keys and quoted parts."""
    text = 'a = 1\n[smtp]\n"host" = "x"\n\n[alerts]\nkpi_repeat_days=3\n[x.y]\nz.w = 1\n'
    assert key_lines(text) == {
        "a": 1,
        "smtp": 2,
        "smtp.host": 3,
        "alerts": 5,
        "alerts.kpi_repeat_days": 6,
        "x.y": 7,
        "x.y.z.w": 8,
    }
