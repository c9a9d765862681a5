"""Data: sources (official files -> uint8 tensors), task streams, batch augmentation."""
