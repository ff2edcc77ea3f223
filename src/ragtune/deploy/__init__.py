"""What a user deploys from a pipeline run: the standalone hybrid loader (`hybrid`, no ragtune needed), the
hybrid artefact the eval stage writes (`artefact`) and the vector stores `ragtune index` fills (`stores`)."""
