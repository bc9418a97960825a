"""Command-line tools: `python -m vidjax.tools.<name>`."""
