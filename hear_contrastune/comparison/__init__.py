"""Frozen vs fine-tuned vs contrastively tuned, under every probe: the run layout, results,
`compare`, its `quickstart` preset and the report."""
