"""A ragtune DVC project: its stage definitions and the code each stage runs."""
