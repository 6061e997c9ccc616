"""From passages to an answer: the abstention gate, prompts and citations, the assistant
and the grounding checker."""
