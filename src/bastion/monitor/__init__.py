"""Detection rules over the event stream, alerts and their delivery, automatic responses."""
