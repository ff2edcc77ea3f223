"""`ragtune label`: label real questions against the pipeline's own arms in a local web page.

command (start-up, the CLI's options) -> server (http.server + the page in static/) -> app (one session) ->
pooling (every arm's top k, pooled and shuffled; search in the corpus), storage (the train-questions file and
its "none" sidecar, leakage refusal, atomic writes), preview (the recommendation the labels would give).
"""
