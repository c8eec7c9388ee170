"""What is read off a host: its facts and the inspection before an activation."""
