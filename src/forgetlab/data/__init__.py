"""Data: sources (official files -> uint8 tensors), task streams, custom data (your own files), batch augmentation."""
