"""The pipeline stages, one module each (`python -m ragtune.stages.NAME`, as dvc.yaml runs them through
.ragtune/stage); each takes every path it reads or writes from its command line (`ragtune.project.pipeline`)."""
