"""From a HEAR task folder to batches: the HEAR formats, the task, its audio, random views and
the positive-aware batch samplers; and heareval's embeddings layout."""
