"""A transaction's settings for the agent's tests: sound values, any of them replaced."""

from __future__ import annotations

from deploy_flake.agent.protocol import Mode
from deploy_flake.agent.settings import Settings

NEW = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web-1"


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {
        "new_system": NEW,
        "mode": Mode.TEST,
        "activation_s": 300,
        "health_s": 60,
        "settle_s": 5,
        "confirm_s": 30,
        "boot_s": 300,
        "holder": "me@laptop",
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]
