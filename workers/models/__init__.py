"""Model adapters (GroundingDINO, SAM2, synthetic) behind the interfaces in ``interfaces``."""
