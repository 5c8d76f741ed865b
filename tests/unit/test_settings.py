"""Office settings: the file, the environment, and secrets only from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from bsc_rules.calendar import US_PER_DAY
from bsc_rules.errors import RuleFileError, SettingsError, UsageError
from bsc_rules.settings import key_lines, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "bsc-rules.example.toml"


def test_shipped_example_routes_sections() -> None:
    """The example routes each section to <section>@datong.example.org."""
    s = load_settings(EXAMPLE)
    assert s.recipients["records"] == ["records@datong.example.org"]
    assert s.recipients["director"] == ["director@datong.example.org"]
    assert s.alerts.policy().escalation_delay == 3 * US_PER_DAY
    assert (s.digest.day, s.digest.hour) == (1, 8)


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
        ("[recipients]\nregistration = ['not-an-address']\n", "recipients.registration.0"),
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
    )
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    lines = sorted(str(p) for p in info.value.problems)
    assert lines == [
        f"{path}:10: digest.hour: Input should be less than or equal to 23",
        f"{path}:3: tick_minuts: unknown key; did you mean 'tick_minutes'?",
        f"{path}:7: smtp.prot: unknown key; did you mean 'port'?",
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
