"""The engine: train task by task, evaluate, checkpoint; device, precision and peak memory (`device`)."""

from forgetlab.engine.checkpoint import load_model
from forgetlab.engine.train import CurvePoint, DivergedError, TrainResult, evaluate_task, train_stream

__all__ = ["CurvePoint", "DivergedError", "TrainResult", "evaluate_task", "load_model", "train_stream"]
