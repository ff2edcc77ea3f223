"""The synthesize stage's concern: training questions for chunks from an LLM backend (`ragtune.llm`), through a
per-item cache (`run`), kept or dropped by counted filters and checked for near-copies of their chunk (`filters`)."""
