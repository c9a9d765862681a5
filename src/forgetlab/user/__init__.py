"""Diagnose and reduce forgetting in your own PyTorch model (issue 7).

* :class:`WrappedModel` / :func:`wrap_model`: any ``nn.Module`` classifier with named
  blocks and one head, usable by the engine, the strategies and the analyses;
* :func:`load_user_model` / :func:`save_user_model`: state_dict files, whole saved models,
  forgetlab checkpoints;
* :func:`load_user_data` / :func:`user_data`: ``.npz``, CSV, image folders, arrays;
* :func:`diagnose`: OLD vs NEW per block (weight change, CKA, subspace, reset analysis);
  :func:`write_report`: an HTML report with figures;
* :func:`finetune`: fine-tune on new data with a method that keeps the old behaviour;
* :mod:`forgetlab.user.transformers`: Hugging Face model folders (:func:`load_hf_model`,
  :func:`save_hf_model`), text data (:func:`load_text_data`), LoRA (:class:`LoRA`): the
  ``hf`` extra, imported when a model is loaded.

Example:
    >>> from torch import nn
    >>> wrap_model(nn.Sequential(nn.Linear(4, 3))).n_outputs
    3
"""

from forgetlab.user.diagnosis import BlockDiagnosis, Diagnosis, ResetResult, accuracy, diagnose, predict, reset_analysis, weight_change, write_report
from forgetlab.user.finetuning import FINETUNE_METHODS, FinetuneResult, finetune, make_params
from forgetlab.user.load import check_state_dict, import_model_class, load_user_model, read_model_file, save_user_model
from forgetlab.user.userdata import UserData, as_inputs, check_fits, load_user_data, split_data, user_data
from forgetlab.user.transformers import HFModel, LoRA, load_hf_model, load_text_data, save_hf_model
from forgetlab.user.wrap import WrappedModel, wrap_model

__all__ = [
    "FINETUNE_METHODS", "HFModel", "LoRA", "load_hf_model", "load_text_data", "save_hf_model", "BlockDiagnosis", "Diagnosis", "FinetuneResult", "finetune", "make_params", "predict", "ResetResult", "UserData", "WrappedModel", "accuracy", "as_inputs",
    "check_fits", "check_state_dict", "diagnose", "import_model_class", "load_user_data", "load_user_model",
    "read_model_file", "reset_analysis", "save_user_model", "split_data", "user_data", "weight_change",
    "wrap_model", "write_report",
]
