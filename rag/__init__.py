"""Query time, as a pipeline of stages, each a folder:

- `index/`: what ingest writes and queries read: the chunk model, the Chroma store, the
  embedder and the one-writer lock;
- `retrieval/`: dense + lexical search fused and diversified, with calibrated passage scores;
- `answering/`: the abstention gate, prompts and citations, the assistant, grounding checks;
- `llm/`: the chat-model backends (in-process transformers, OpenAI-compatible servers);
- `demos/`: the teaching demos.

`config.py` holds the settings and `services.py` the composition root that wires the stages.
"""
