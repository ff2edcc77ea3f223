"""The query adapter and everything that makes it: the model (`model`) and its losses (`losses`), training
data and mined hard negatives (`data`, `hard_negatives`, `real_questions`), validation splits and metrics
(`splits`), the training loop and bagging (`training`), k-fold over human questions (`folds`), the Optuna
search (`tuning`, `study`, `tune_worker` for workers on other machines), the sentence-transformers export
(`export`, `export_module`) and the MLflow model (`mlflow_model`, `mlflow_pyfunc`). Used by the tune and train
stages."""
