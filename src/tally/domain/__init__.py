"""The pure core: commands, events, state and the rules between them (stdlib only)."""
