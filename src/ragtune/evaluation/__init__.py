"""The eval stage's concern: retrieval arms (`arms`) on question sets (`inputs`), per-question metrics with
intervals and paired tests (`metrics`, `statistics`), the report and its files (`report`), the whole stage
(`run`), and the learning curve over labelled real questions (`learning_curve`, the curve stage)."""
