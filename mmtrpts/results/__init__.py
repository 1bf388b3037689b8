"""Results of finished runs: reading work dirs, tables beside the papers'
numbers, and model-zoo metafile entries."""
