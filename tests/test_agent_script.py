"""The agent script run by hand on a host, the test playing the transaction's part.

Its own check of the settings, the confirmation that waits until the transaction asks for
it, and the watch that follows the log but believes only the state file."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from deploy_flake.agent.script import script, script_path
from tests.lab import Host, wait_for


def _install_agent(host: Host) -> str:
    """The agent script on the host, where deploy-flake puts it; its path."""
    path = script_path()
    host.ssh(f"mkdir -p /run/deploy-flake && cat > {path}", input=script().decode())
    return path


_SOUND = "MODE=test\nHEALTH_S=60\nSETTLE_S=0\nCONFIRM_S=30\nBOOT_S=60\nHOLDER=test\nGC_ROOT=\n"


@pytest.mark.parametrize(
    ("deploy_id", "settings", "refusal"),
    [
        (
            "zero-limit",
            _SOUND + "ACTIVATION_S=0\nRECOVERY_S=600\nGUARD_S=300\n",
            "ACTIVATION_S must be a whole number of seconds, at least 1",
        ),
        # the deployer computes the recovery's and the guard's budgets: without them
        # (settings written by hand, or by a deployer from before), nothing is started
        (
            "no-guard-budget",
            _SOUND + "ACTIVATION_S=60\nRECOVERY_S=600\n",
            "GUARD_S must be a whole number of seconds, at least 1 (not '')",
        ),
    ],
)
def test_the_agent_itself_refuses_unsound_settings(
    hosts: dict[str, Host], deploy_id: str, settings: str, refusal: str
) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    path = _install_agent(alpha)
    done = alpha.ssh(f"/bin/sh {path} start {deploy_id}", input=f"NEW={before}\n{settings}")
    assert done.stdout.startswith("@@deploy-flake-state\tfailed\t"), done.stdout
    assert refusal in done.stdout
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.transaction_states() == {deploy_id: "failed"}


def _checking_transaction(host: Host, deploy_id: str) -> tuple[str, str]:
    """The agent on the host, and a transaction DEPLOY_ID recorded as checking (no unit runs
    it: the test plays its part). The agent's path and the transaction's directory."""
    path = _install_agent(host)
    d = f"/run/deploy-flake/{deploy_id}"
    host.ssh(
        f"mkdir -p {d} && printf 'HEALTH_S=5\\nSETTLE_S=0\\n' > {d}/settings && echo checking > {d}/state"
    )
    return path, d


def test_an_early_confirmation_is_held_until_the_transaction_asks(hosts: dict[str, Host]) -> None:
    """Without a settle window the deployer logs in as soon as the activation finished
    (checking): the agent's confirm must not confirm anything before the transaction asks
    (awaiting-confirmation), and must then show the log until the transaction ends.
    Driven by hand against the real script: the test plays the transaction's unit."""

    alpha = hosts["alpha"]
    path, d = _checking_transaction(alpha, "early")
    alpha.ssh(f"echo 'line before' > {d}/log")
    answer: list[subprocess.CompletedProcess[str]] = []
    confirm = threading.Thread(
        target=lambda: answer.append(alpha.ssh(f"/bin/sh {path} confirm early 0 20", check=False))
    )
    confirm.start()
    time.sleep(2)  # the login is in; the transaction is still checking
    assert alpha.ssh(f"test -e {d}/confirm", check=False).returncode == 1, "confirmed before asked"
    alpha.ssh(f"echo awaiting-confirmation > {d}/state")
    assert wait_for(lambda: alpha.ssh(f"test -e {d}/confirm", check=False).returncode == 0, 5, 0.1)
    alpha.ssh(f"echo committing > {d}/state; echo 'committed here' >> {d}/log")
    time.sleep(1)
    alpha.ssh(f"echo activated > {d}/state")
    confirm.join(30)
    assert answer, "the confirmation never answered"
    out = answer[0].stdout
    assert "line before" in out and "committed here" in out, out
    assert out.rstrip().splitlines()[-1].startswith("@@deploy-flake-state\tactivated"), out


def test_an_early_confirmation_after_a_failed_check_confirms_nothing(hosts: dict[str, Host]) -> None:
    """The check found a problem (rolling back): the held confirmation answers with that."""
    alpha = hosts["alpha"]
    path, d = _checking_transaction(alpha, "early-fail")
    background = (
        f"(sleep 1; echo rolling-back > {d}/state; sleep 1; echo rolled-back > {d}/state) >/dev/null 2>&1 &"
    )
    alpha.ssh(background)
    out = alpha.ssh(f"/bin/sh {path} confirm early-fail 0 20", check=False).stdout
    assert alpha.ssh(f"test -e {d}/confirm", check=False).returncode == 1
    assert out.rstrip().splitlines()[-1].startswith("@@deploy-flake-state\trolled-back"), out


def test_the_watch_follows_the_log_and_believes_only_the_state_file(hosts: dict[str, Host]) -> None:
    """The agent's watch waits on the log (tail -F), not on a clock: it shows each line as it
    comes, an activation's output that looks like a state line does not end it, the state
    file does; a state written without its log line is seen within its one-second re-read;
    MAX_S bounds it; it leaves no process nor pipe behind. Driven by hand on the host: the
    test plays the transaction's part."""
    alpha = hosts["alpha"]
    path, d = _checking_transaction(alpha, "watched")
    script_text = f"""
        d={d}
        echo activating > $d/state
        printf 'line one\\n' > $d/log
        /bin/sh {path} watch watched 0 20 checking > /tmp/watch.out 2>&1 & w=$!
        sleep 0.5
        echo 'fixture: [deploy-flake] state: activated' >> $d/log
        sleep 1.5
        kill -0 $w && echo "still watching"
        echo checking > $d/state && echo '[deploy-flake] state: checking' >> $d/log
        wait $w; echo "first watch: exit $?"
        off=$(stat -c %s $d/log)
        /bin/sh {path} watch watched "$off" 20 > /tmp/watch2.out 2>&1 & w=$!
        sleep 0.5
        echo 'late line' >> $d/log
        echo activated > $d/state
        wait $w; echo "second watch: exit $?"
        echo rolling-back > $d/state
        /bin/sh {path} watch watched "$off" 1 > /tmp/watch3.out 2>&1; echo "third watch: exit $?"
        ls $d | grep -c '^watch\\.' || true
        pgrep -f "tail .*$d/log" || echo "no tail left"
    """
    done = alpha.ssh(script_text, timeout=90)
    report = done.stdout
    assert "still watching" in report, report
    assert "first watch: exit 0" in report and "second watch: exit 0" in report, report
    assert "third watch: exit 0" in report and "no tail left" in report, report
    assert report.splitlines()[-2] == "0", report  # no pipe left in the transaction's directory

    first = alpha.out("cat /tmp/watch.out").splitlines()
    fake, real = "fixture: [deploy-flake] state: activated", "[deploy-flake] state: checking"
    assert first[:3] == ["line one", fake, real], first
    assert first[-1].split("\t")[:2] == ["@@deploy-flake-state", "checking"], first
    second = alpha.out("cat /tmp/watch2.out").splitlines()
    assert second[0] == "late line", second
    assert second[-1].split("\t")[:2] == ["@@deploy-flake-state", "activated"], second
    third = alpha.out("cat /tmp/watch3.out").splitlines()
    assert third[-1].split("\t")[:2] == ["@@deploy-flake-state", "rolling-back"], third
