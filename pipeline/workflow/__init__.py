"""What the Snakefile imports at parse time, in the main process and in every cluster job: torch-free, and
importing only pipeline/core."""
