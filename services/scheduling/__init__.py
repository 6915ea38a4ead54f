"""Pure scheduling logic: task plans, job states, retry policy, dispatch. No I/O here."""
