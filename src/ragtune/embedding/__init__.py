"""The embed stage's concern: an embedder with a per-text cache (`embedder`: texts in, L2-normalised float32
(n, d) out, cached by model fingerprint and text hash) and the pipeline's text sets embedded with it (`sets`)."""
