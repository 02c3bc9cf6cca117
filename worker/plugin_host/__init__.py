"""The plugin host: the contract (hookspecs, ctx, outcomes), loading, dispatch in lanes."""
