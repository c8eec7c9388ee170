"""One host's pipeline: its stages, checks, plan, rollback target, activation and reboot."""
