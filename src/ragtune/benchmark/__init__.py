"""`ragtune bench`: the whole pipeline in one scratch DVC workspace per corpus (`workspaces`), its results as
one table row per corpus with charts (`tables`), and the command that runs both (`cross_corpus`)."""
