"""Teaching demos on the course's own models: next-token probabilities, tokenizers, attention
and few-shot prompting. Core code only (no Discord); the CLI's `demo` group and the bot's
demo cog are thin adapters over these modules.

Importing the package is cheap: torch, transformers and matplotlib load on first use.
"""
