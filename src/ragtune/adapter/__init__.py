"""The query adapter and everything that makes it: the model and its losses (`model`), training data and mined
hard negatives (`data`, `hard_negatives`, `real_questions`), validation splits and metrics (`splits`), the
training loop and bagging (`training`), k-fold over human questions (`folds`), the Optuna search (`tuning`,
`study`) and the sentence-transformers export (`export`, `export_module`). Used by the tune and train stages."""
