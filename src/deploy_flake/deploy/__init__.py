"""One host's pipeline. Start at jobs.py: host_job() gives the job a run asks for (status,
plan, deploy, rollback), and each job's steps read from top to bottom.

    run.py              the Run every host shares; the SystemBuilder interface it may hold
    host.py             HostJob: what every job shares (stages, facts, result, never raising)
    jobs.py             the four jobs, and host_job
    transaction.py      what deploy and rollback share once the new system is known
    build.py            copying the flake and building the system
    checks.py           the sanity checks and the preflight verdict (pure)
    rollback_target.py  the generation a rollback goes to (pure)
    plan.py             what activating a system would change
    activation.py       driving the host's agent: start, follow, confirm, conclude, Ctrl-C
    reboot.py           whether to reboot (pure), and the unverified reboot
    boot_trial.py       the verified reboot: the boot loader's check, the one-time boot
    last_resort.py      --on-rollback-failure=reboot
    status.py           what status reports
"""
