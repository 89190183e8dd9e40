"""platform.settings.load_settings: the shared merge (configmerge) with the platform's messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.errors import ConfigError
from powernode.platform.settings import Settings, load_settings


def test_overrides_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    f = tmp_path / "platform.toml"
    f.write_text('port = 1001\nhost = "127.0.0.2"\ndata_dir = "/srv/a"\n')
    env = {"POWERNODE_PORT": "1002", "POWERNODE_DATA_DIR": "/srv/b"}
    s = load_settings(f, env=env, port=1003, host=None)
    assert (s.port, s.host, s.data_dir) == (1003, "127.0.0.2", Path("/srv/b"))
    assert load_settings(None, env={}).port == Settings.model_fields["port"].default


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r": cannot read settings file: No such file or directory$"),
        ("port = ", r": not valid TOML: "),
        ("colour = 1\n", r": unknown setting\(s\) colour; known: "),
        ('port = "many"\n', r": port: Input should be a valid integer"),
    ],
    ids=["missing", "not-toml", "unknown-key", "bad-value"],
)
def test_a_bad_settings_file_names_itself(
    tmp_path: Path, content: str | None, message: str
) -> None:
    f = tmp_path / "platform.toml"
    if content is not None:
        f.write_text(content)
    with pytest.raises(ConfigError, match=rf"^{f}{message}"):
        load_settings(f, env={})


def test_a_bad_environment_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^settings: port: "):
        load_settings(None, env={"POWERNODE_PORT": "x"})


@pytest.mark.parametrize(
    ("registry", "given", "guests_see", "signed_as"),
    [
        ("http://127.0.0.1:5000", "", "http://10.0.2.2:5000", "127.0.0.1:5000"),  # loopback
        ("https://localhost:5443/", "", "https://10.0.2.2:5443", "localhost:5443"),
        ("https://registry.example.com", "", "https://registry.example.com", ""),  # the same
        ("/srv/powernode/registry", "", "", ""),  # a layout directory: no guest reads it
        ("", "", "", ""),
        ("http://127.0.0.1:5000", "http://192.0.2.7:5000/", "http://192.0.2.7:5000",
         "127.0.0.1:5000"),
    ],
)  # fmt: skip
def test_the_registry_a_guest_dials_and_the_name_its_signatures_carry(
    registry: str, given: str, guests_see: str, signed_as: str
) -> None:
    s = Settings(registry=registry, guest_modules_registry=given)
    assert s.effective_guest_modules_registry == guests_see
    assert s.effective_guest_modules_registry_name == signed_as
