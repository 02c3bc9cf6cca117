"""The demo: the whole product in seconds against the emulator."""
