"""Operating commands: setup, doctor, replay, the RAM policy."""
