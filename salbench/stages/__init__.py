"""The pipeline stages: command-line plumbing, the workspace of a run, one module per stage, the pipeline."""
