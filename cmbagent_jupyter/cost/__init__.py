"""Costs: every model call's tokens, priced with genai-prices, recorded in the store."""
