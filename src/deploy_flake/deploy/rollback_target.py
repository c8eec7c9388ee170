"""The generation a rollback goes to, from the host's facts: a pure function."""

from __future__ import annotations

from deploy_flake.errors import DeployError
from deploy_flake.host.target import HostFacts


def rollback_target(facts: HostFacts, wanted: int | None, host: str) -> tuple[str, int]:
    """The system and generation to roll back to: wanted (--to N), or the one before the
    profile's current one; a DeployError when there is none, or it runs already."""
    generations = dict(facts.generations)
    current = facts.generation
    if not generations or current is None:
        raise DeployError(f"{host} has no generations of /nix/var/nix/profiles/system")
    if wanted is None:
        earlier = [n for n in generations if n < current]
        if not earlier:
            raise DeployError(
                f"generation {current} is the oldest of /nix/var/nix/profiles/system on "
                f"{host}: there is nothing to roll back to"
            )
        wanted = max(earlier)
    if wanted not in generations:
        known = ", ".join(str(n) for n in sorted(generations))
        raise DeployError(f"{host} has no system generation {wanted} (it has {known})")
    if wanted == current and generations[wanted] == facts.current_system:
        raise DeployError(
            f"{host} already runs generation {wanted}, the profile's current one: nothing to do"
        )
    return generations[wanted], wanted
