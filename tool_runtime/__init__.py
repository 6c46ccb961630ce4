"""tool_runtime package."""
