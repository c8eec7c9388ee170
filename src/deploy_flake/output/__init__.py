"""What the operator sees: events, the plain and live displays, the run log, the report, questions."""
