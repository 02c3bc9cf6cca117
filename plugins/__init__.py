"""The built-in plugins. Each is registered exactly like a third-party plugin (see manager.py)."""
