"""The agent script as it goes to the host: its parts (sh/) joined, under the shared constants.

The constants the deployer and the agent must agree on live in protocol.py and
settings.py only; they are written into the script, as NAME=value lines right
below its header, when it is joined. The script's path on the host is named by
a hash of the joined content, so two versions never mix.

`python -m deploy_flake.agent.script` prints the joined script (scripts/test
runs shellcheck on it).
"""

from __future__ import annotations

import functools
import hashlib
import shlex
import sys
from importlib import resources

from deploy_flake.agent.protocol import (
    AGENT_DIR,
    BOOT_ENTRY_MARK,
    GC_ROOT_MAX_AGE_MIN,
    GC_ROOTS_DIR,
    GC_TAG,
    LAST_DEPLOY_FILE,
    STATE_LINE,
    STATUS_TAG,
    TRIAL_DIR,
    TRIAL_TAG,
)
from deploy_flake.agent.settings import (
    CONFIRM_HOLD_MARGIN_S,
    CONFIRM_TAKEN_S,
    GUARD_MARGIN_S,
    KILL_GRACE_S,
    LOCK_WAIT_S,
    PROFILE_SET_S,
    STOP_MARGIN_S,
)

# In the order they are joined. The header (the protocol's documentation, the shell's
# options) comes first and the dispatch on the verb last; the parts between only define
# functions, apart from a few variables taken from the command line (invocation.sh),
# which the ones after it use.
PARTS = (
    "header.sh",
    "invocation.sh",
    "state.sh",
    "keeper-guard.sh",
    "poll.sh",
    "health.sh",
    "transaction.sh",
    "commit.sh",
    "trial.sh",
    "gc.sh",
    "verbs.sh",
    "main.sh",
)

# The script's name for each shared value, and the value: written after the header.
SHARED: tuple[tuple[str, str | int], ...] = (
    ("BASE", AGENT_DIR),
    ("LAST_DEPLOY", LAST_DEPLOY_FILE),
    ("GC_ROOTS", GC_ROOTS_DIR),
    ("TRIAL", TRIAL_DIR),
    ("TRIAL_TAG", TRIAL_TAG),
    ("GC_TAG", GC_TAG),
    ("ROOT_MAX_AGE_MIN", GC_ROOT_MAX_AGE_MIN),
    ("STATUS_TAG", STATUS_TAG),
    ("STATE_LINE", STATE_LINE),
    ("BOOT_ENTRY_MARK", BOOT_ENTRY_MARK),
    ("LOCK_WAIT_S", LOCK_WAIT_S),
    ("PROFILE_SET_S", PROFILE_SET_S),
    ("KILL_GRACE_S", KILL_GRACE_S),
    ("GUARD_MARGIN_S", GUARD_MARGIN_S),
    ("STOP_MARGIN_S", STOP_MARGIN_S),
    ("CONFIRM_HOLD_MARGIN_S", CONFIRM_HOLD_MARGIN_S),  # an early confirm's wait, beyond the checks
    ("CONFIRM_TAKEN_S", CONFIRM_TAKEN_S),  # how long confirm waits for the transaction to take it
)


def shared_constants() -> str:
    """The NAME=value lines of SHARED, as the script gets them (values quoted for sh)."""
    lines = [
        "# ---------------------------------------------------------------- shared with the deployer",
        "# Written by deploy_flake/agent/script.py from deploy_flake/agent/{protocol,settings}.py:",
        "# the one copy of each. The transaction's own budgets come with its settings.",
    ]
    lines += [f"{name}={shlex.quote(str(value))}" for name, value in SHARED]
    return "\n".join(lines) + "\n"


def part(name: str) -> str:
    return (resources.files("deploy_flake.agent") / "sh" / name).read_text(encoding="utf-8")


@functools.cache
def script() -> bytes:
    """The whole agent script: the header, the shared constants, then the other parts."""
    header, *rest = (part(name) for name in PARTS)
    return "\n".join([header, shared_constants(), *rest]).encode()


def script_path() -> str:
    """Where the agent lives on the host: named by its content, so versions never mix."""
    return f"{AGENT_DIR}/agent-{hashlib.sha256(script()).hexdigest()[:16]}.sh"


if __name__ == "__main__":
    sys.stdout.buffer.write(script())
