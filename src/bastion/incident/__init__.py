"""The incident toolkit's state: lockdown, read by every process within a second."""
