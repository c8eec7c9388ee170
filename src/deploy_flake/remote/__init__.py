"""How a host is reached: its destination, the ssh options, the sudo password."""
