"""The fetch stage's concern: a corpus and its test questions from a source (`sources/`: eu-law, legal-rag-bench,
jsonl), optionally cut into passages the embedder reads whole (`passages`), checked against the contracts of
`ragtune.records` (`fetching`)."""
