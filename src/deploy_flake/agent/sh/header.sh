#!/bin/sh
# deploy-flake-agent: the target side of a deploy. Runs on the host as root and
# needs only POSIX sh, coreutils, util-linux (flock), systemd and nix.
# Its deployer-side counterpart, with the same protocol, is the Python package
# deploy_flake/agent/. This script is joined from the parts in deploy_flake/agent/sh/
# by deploy_flake/agent/script.py, which writes the constants both sides share
# (limits, paths, the status tag) right below this header: they have one copy,
# in Python (`python -m deploy_flake.agent.script` prints the whole script).
#
# The activation transaction runs inside a transient systemd unit, so nothing
# that happens to the deployer or its SSH connection can interrupt it, and
# every decision that protects the host is taken here:
#   1. take the host's deploy lock; finish any earlier transaction that was
#      killed before it ended; refuse while another switch is running or a
#      shutdown is scheduled
#   2. switch-to-configuration test (bounded by the activation timeout)
#   3. the system must become healthy and stay so for SETTLE_S: no unit newly
#      failed, none crash-looping (auto-restart, or its restart count rising)
#   4. wait for the deployer's confirmation, which arrives over a brand-new
#      SSH connection (proof that logins still work)
#   5. only then, if the profile is still the one the deploy found: a new
#      system profile generation and switch-to-configuration boot
# Any failure, timeout, abort request or missing confirmation before step 5
# re-activates the previous system (retried once): the boot entry is never
# touched before the new system was confirmed. If the unit itself is killed,
# its ExecStopPost (`recover`) does the same; and because a kill of the whole
# unit can take its ExecStopPost along (systemd 262 does), a guard outside the
# unit does it too: the transient timer deploy-flake-ID-guard.timer, armed before
# the unit starts and fired at the transaction's deadline, and its service,
# started at once by the unit's OnFailure= when the unit dies. The guard runs in
# a cgroup of its own and only acts on a transaction that nothing carries on.
# Tools always come from the system that ran before the deploy, never from
# the one being tried.
#
# Usage (as root; ID is the deploy's id):
#   agent start ID [MAX_S [STOP]] < SETTINGS
#                              record the settings (KEY=VALUE lines: NEW MODE ACTIVATION_S
#                              HEALTH_S SETTLE_S CONFIRM_S BOOT_S HOLDER GC_ROOT RECOVERY_S
#                              GUARD_S, and optionally FLAKE, what is recorded as the deploy's
#                              source, GENERATION, an existing profile generation of NEW
#                              to switch the profile to instead of adding one: a rollback,
#                              EXPECT, the profile generation (system-N-link) the transaction
#                              must find, else it changes nothing: a rollback's;
#                              SPECIALISATION, a specialisation of NEW that `test` activates, the
#                              profile and boot entry staying NEW; INSTALL_BOOTLOADER=1, set
#                              NIXOS_INSTALL_BOOTLOADER=1 for `switch-to-configuration boot`) and run
#                              `agent run ID` in the transient unit deploy-flake-ID; with
#                              MAX_S, then `watch ID 0 MAX_S STOP` (one round trip less)
#   agent run ID               the transaction (the unit's main process)
#   agent recover ID           the unit's ExecStopPost: finish a transaction that was killed
#   agent guard ID             the guard's service: once the unit is gone, `recover`
#   agent rescue ID OFFSET MAX_S  start the guard now (the deployer saw nothing carry the
#                              transaction on), then `watch ID OFFSET MAX_S`
#   agent finish ID            the same, by a newer transaction that holds the deploy lock
#   agent watch ID OFFSET MAX_S [STOP]  the log from byte OFFSET on, then the status, once
#                              the transaction needs the deployer, ended, reached phase STOP
#                              (or MAX_S passed)
#   agent confirm ID [OFFSET MAX_S]  confirm; print the status once the transaction took it
#                              (with OFFSET: `watch ID OFFSET MAX_S` from then on). Sent early,
#                              while the new system is being checked after its activation,
#                              it waits for the transaction to ask for it.
#   agent abort ID             roll back now, or never start (the deployer was interrupted)
#   agent status ID            print the status
#   agent boot-info ID [TOPLEVEL [BOOT_ONCE [GENERATION]]]  what boots the host (KEY=VALUE
#                              lines: loader, default, oneshot, trial, entry...; for TOPLEVEL:
#                              boot_free_kib, boot_needs_kib, resets, panic, watchdog, and
#                              problem: what the transaction's boot check would refuse)
#   agent trial-status|trial-commit|trial-reject ID [REASON]  the verified reboot (--reboot,
#                              settings BOOT_ONCE=1 TRIAL_WINDOW_S): its status line, after
#                              making the trial boot the default, or sending it back
#   agent boot-guard ID        the trial's guard unit, at every boot while it is armed
#   agent gc ID KEEP OLDER_S COLLECT DRY  deploy-flake gc: old system generations go (never
#                              one the host needs), the boot entries are written again, and
#                              with COLLECT the store's garbage; lines tagged GC_TAG (sh/gc.sh)
# The trial verbs end with their own line (sh/trial.sh):
#   @@deploy-flake-trial<TAB>STATE<TAB>ID<TAB>NEW<TAB>BOOTED<TAB>REASON
# Every verb but run, recover and guard ends with one status line:
#   @@deploy-flake-state<TAB>PHASE<TAB>PREVIOUS<TAB>NEW<TAB>KEEPER<TAB>KILLED_IN<TAB>REPLACED<TAB>COMMITTED<TAB>REASON
# PHASE: none pending starting activating checking awaiting-confirmation committing
# rolling-back (in progress) or activated staged rolled-back failed rollback-failed
# restore-failed (final; staged: BOOT_ONCE's commit armed the one-time boot). KEEPER: what carries the transaction on: unit (its own
# unit, its ExecStopPost included), guard (the guard's service), none (nothing:
# both were killed; a transaction in progress then needs `rescue`). KILLED_IN: the phase
# in which the guard found the unit gone (its recovery moves the phase on at once), or empty.
# REPLACED: the profile generation (system-N-link) the transaction found under the deploy
# lock, the one it replaces; COMMITTED: the one it left the profile at once committed.
# The status line is the last line of a verb's answer, and only that line is one: the log
# shown before it may hold anything (an activation's output too).
# $BASE/ID/$BOOT_ENTRY_MARK exists from the first write of NEW's boot entry until the
# previous one was written again: without it, the boot entry is the one the deploy found.
# The deployer computes the two budgets that span a whole transaction, from the
# settings and the shared limits: RECOVERY_S, the longest recovery of a killed
# transaction (the unit's stop timeout covers it, with STOP_MARGIN_S), and GUARD_S,
# when the guard's timer fires.
set -u
export LC_ALL=C
PATH="${PATH:-/usr/bin:/bin}:/run/current-system/sw/bin:/usr/bin:/bin"
