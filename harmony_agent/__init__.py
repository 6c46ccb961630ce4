"""harmony_agent package."""
