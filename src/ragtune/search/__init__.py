"""Exact search over a corpus, used by training, eval, judge and `ragtune search`: dense top-k in bounded
blocks (`dense`), BM25 (`lexical`) and rank or score fusion of the two (`fusion`)."""
