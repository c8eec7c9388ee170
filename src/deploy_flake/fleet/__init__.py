"""Many hosts: the run in parallel, rollouts, building once, the inventory."""
