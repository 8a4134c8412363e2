"""Text -> token ids -> training batches: reading corpora, tokenizers, the encoded dataset, batches."""
