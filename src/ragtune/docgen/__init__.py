"""The generated parts of README.md and docs/ (never typed by hand): each lives between `<!-- NAME:start -->` and
`<!-- NAME:end -->` in whichever markdown file holds those markers, rendered from the pipeline's results
(`results`, `bench_blocks`) or from the code itself (`params_ref`, `cli_ref`, `code_ref`), so that it cannot go
stale. `sections` lists them; `python -m ragtune.readme` rewrites them all, `--check` reports stale ones."""
