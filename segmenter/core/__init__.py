"""What every job shares: the document and its tasks, windows over long documents, the
decisions that turn probabilities into segments, and safe file writing."""
