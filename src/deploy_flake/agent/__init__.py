"""The host agent, from the deployer's side, and the agent script itself.

The agent (sh/, joined by script.py) runs the activation transaction on the host in
a transient systemd unit and takes every decision that protects the host there.
This package is everything the deployer knows about it:

- protocol.py: the phases a transaction goes through, its keeper, the status line
  it answers with, and the strings both sides write;
- settings.py: the settings a transaction is given, the agent's fixed limits, and
  how long each step may take;
- script.py: the script joined from its parts, with the shared constants written in;
- client.py: the Agent, which starts, follows, confirms and aborts one transaction
  over ssh (log_cursor.py: how much of the agent's log it has shown);
- calls.py: the verbs outside a transaction (install, boot-info, gc).
"""
