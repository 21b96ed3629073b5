"""The trained network and real tensors (torch): models, checkpoints, data, capture, attribution."""
