"""Thin adapters from Discord commands and events to the bot's services."""
