"""Tokens stay secret: a .env file holding one must be readable by its owner alone, and the settings never
show one."""

from __future__ import annotations

import json

from conftest import run_cli

TOKEN = "tf-admin-0d6b1c2e9f"


def test_a_env_file_with_a_token_that_others_can_read_is_refused(tmp_path):
    home = tmp_path / ".tweetforge"
    env = tmp_path / ".env"
    env.write_text(f"TWEETFORGE_ADMIN_TOKEN={TOKEN}\n")
    env.chmod(0o644)
    refused = run_cli(home, "optout", "list", check=False)
    assert refused.returncode == 1 and TOKEN not in refused.stdout + refused.stderr
    assert f"{env} holds a token and other users can read it (mode 644): chmod 600 .env" in refused.stderr.replace("\n", "")
    env.chmod(0o600)
    assert json.loads(run_cli(home, "optout", "list", "--json").stdout) == []


def test_a_env_file_without_tokens_may_be_readable(tmp_path):
    (tmp_path / ".env").write_text("TWEETFORGE_RATE_LIMIT_PER_MINUTE=60\n")
    (tmp_path / ".env").chmod(0o644)
    assert json.loads(run_cli(tmp_path / ".tweetforge", "optout", "list", "--json").stdout) == []


def test_settings_never_show_the_admin_token(monkeypatch):
    from tweetforge.config import Settings

    monkeypatch.setenv("TWEETFORGE_ADMIN_TOKEN", TOKEN)
    settings = Settings()
    assert settings.admin_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
