"""The judge stage's concern: answers from each arm's top-k chunks scored 1-5 by an LLM judge in both display
orders. Prompts and schemas (`prompts`), the cached and retried LLM seam (`calls`), swapped orders folded into
scores, agreement and bias (`aggregate`), the stage's files (`outputs`) and the run (`run`); token F1 and
embedding similarity need no LLM (`text_metrics`)."""
