"""Rule authors' tools: rule test files (``bsc-rules test``) and ``bsc-rules whatif``."""
