"""Where a model trains: ``auto``, ``cpu`` or ``cuda``, resolved against the CUDA devices that XGBoost and
PyTorch can use.
"""

from __future__ import annotations

import json

import numpy as np

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class DeviceUnavailableError(ValueError):
    """``--device cuda`` was asked for but no usable CUDA device is visible."""


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the trainer
        return False
    return bool(torch.cuda.is_available())


def xgboost_cuda_available() -> bool:
    """Whether XGBoost can train on a GPU here: a CUDA build and a visible device (one tiny probe fit)."""
    import warnings

    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA"):
        return False
    data = xgb.DMatrix(np.array([[0.0], [1.0]]), label=np.array([0.0, 1.0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            booster = xgb.train({"device": "cuda", "tree_method": "hist", "verbosity": 1}, data, num_boost_round=1)
        except xgb.core.XGBoostError:
            return False
    fell_back = any("GPU" in str(item.message) for item in caught)
    return not fell_back and "cuda" in json.loads(booster.save_config())["learner"]["generic_param"]["device"]


def resolve_device(requested: str = "auto", model_type: str = "xgboost") -> str:
    """``cpu`` or ``cuda``: ``auto`` takes CUDA when the model's library sees a GPU, ``cuda`` requires one."""
    if requested not in DEVICES:
        raise DeviceUnavailableError(f"unknown device {requested!r}; expected one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return "cpu"
    # XGBoost asks XGBoost (a probe fit; no torch import, which costs seconds), the MLP asks torch.
    available = xgboost_cuda_available() if model_type == "xgboost" else torch_cuda_available()
    if available:
        return "cuda"
    if requested == "cuda":
        raise DeviceUnavailableError(
            f"--device cuda was requested but no CUDA GPU is visible to {model_type} on this machine "
            f"({'torch.cuda.is_available() is False' if model_type == 'mlp' else 'XGBoost found no GPU'}); "
            "use --device auto or cpu, or run in the GPU pod"
        )
    return "cpu"
