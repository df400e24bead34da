"""`muxtui serve`: one OpenAI-compatible endpoint in front of the engine."""
