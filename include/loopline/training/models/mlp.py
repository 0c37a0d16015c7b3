"""The PyTorch tabular MLP (:class:`MLPModel`): embeddings for the categories, dense layers after."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.schemas import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from loopline.training.models.base import FitInfo, FraudModel, _pr_auc
from loopline.training.models.params import TrainParams
from loopline.training.models.preprocess import INPUT_COLUMNS, Preprocessor, positive_weight


def _embedding_dim(cardinality: int) -> int:
    return int(min(16, max(2, round(1.6 * (cardinality + 1) ** 0.56))))


def _build_network(n_numeric: int, cardinalities: list[int], hidden: tuple[int, ...], dropout: float):
    import torch
    from torch import nn

    class TabularMLP(nn.Module):
        """Numerics + one embedding per categorical column (index 0 = unknown) -> MLP -> one logit."""

        def __init__(self):
            super().__init__()
            self.embeddings = nn.ModuleList(nn.Embedding(c + 1, _embedding_dim(c)) for c in cardinalities)
            width = n_numeric + sum(_embedding_dim(c) for c in cardinalities)
            layers: list[nn.Module] = []
            for size in hidden:
                layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
                width = size
            layers.append(nn.Linear(width, 1))
            self.net = nn.Sequential(*layers)

        def forward(self, numeric, categorical):
            parts = [numeric] + [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
            return self.net(torch.cat(parts, dim=1)).squeeze(1)

    return TabularMLP()


class MLPModel(FraudModel):
    model_type = "mlp"

    def __init__(self, network, preprocessor: Preprocessor, pos_weight: float, params: TrainParams, fit_info: FitInfo):
        super().__init__(preprocessor, pos_weight, params, fit_info)
        self.network = network
        self.device = "cpu"
        self.reference_codes: list[int] = [0] * len(CATEGORICAL_FEATURES)

    def _logits(self, numeric: np.ndarray, categorical: np.ndarray, batch: int = 65536) -> np.ndarray:
        import torch

        self.network.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(numeric), batch):
                num = torch.from_numpy(numeric[start : start + batch]).to(self.device)
                cat = torch.from_numpy(categorical[start : start + batch]).to(self.device)
                out.append(self.network(num, cat).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def _raw_proba(self, df: pd.DataFrame) -> np.ndarray:
        numeric, categorical = self.preprocessor.mlp_arrays(df)
        return 1.0 / (1.0 + np.exp(-self._logits(numeric, categorical)))

    def feature_importance(self) -> None:
        return None

    def contributions(self, df: pd.DataFrame) -> pd.DataFrame:
        """Occlusion: the drop in log-odds when a feature is set to its training reference value
        (median for numerics, the most frequent known category for categoricals)."""
        numeric, categorical = self.preprocessor.mlp_arrays(df)
        base = self._logits(numeric, categorical)
        reference = (np.asarray(self.preprocessor.fill) - np.asarray(self.preprocessor.center)) / np.asarray(
            self.preprocessor.scale
        )
        out = {}
        for i, name in enumerate(CATEGORICAL_FEATURES):
            changed = categorical.copy()
            changed[:, i] = self.reference_codes[i]
            out[name] = base - self._logits(numeric, changed)
        for j, name in enumerate(NUMERIC_FEATURES):
            changed = numeric.copy()
            changed[:, j] = reference[j]
            out[name] = base - self._logits(changed, categorical)
        return pd.DataFrame(out, index=df.index)[list(INPUT_COLUMNS)]

    def _save_weights(self, folder: Path) -> None:
        import torch

        state = {key: value.detach().cpu() for key, value in self.network.state_dict().items()}
        torch.save({"state_dict": state, "reference_codes": list(self.reference_codes)}, folder / "mlp.pt")

    @classmethod
    def load(cls, folder: Path, pre: Preprocessor, pos_weight: float, params: TrainParams, info: FitInfo):
        import torch

        saved = torch.load(folder / "mlp.pt", map_location="cpu", weights_only=True)
        network = _build_network(
            len(NUMERIC_FEATURES), [len(pre.categories[c]) for c in CATEGORICAL_FEATURES], params.hidden, params.dropout
        )
        network.load_state_dict(saved["state_dict"])
        model = cls(network, pre, pos_weight, params, info)
        model.reference_codes = list(saved["reference_codes"])
        return model

    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        y_train: np.ndarray,
        val: pd.DataFrame,
        y_val: np.ndarray,
        params: TrainParams,
        device: str,
        on_iteration: Callable[[int, float], None] | None = None,
    ) -> MLPModel:
        import torch
        import torch._dynamo  # torch.optim imports it on first use (seconds): keep that out of the timing

        started = time.perf_counter()
        torch.manual_seed(params.seed)
        generator = torch.Generator().manual_seed(params.seed)

        pre = Preprocessor.fit(train)
        weight = params.scale_pos_weight or positive_weight(y_train)
        numeric, categorical = pre.mlp_arrays(train)
        val_numeric, val_categorical = pre.mlp_arrays(val)
        cardinalities = [len(pre.categories[c]) for c in CATEGORICAL_FEATURES]
        network = _build_network(numeric.shape[1], cardinalities, params.hidden, params.dropout).to(device)
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=params.learning_rate_for("mlp"), weight_decay=params.weight_decay
        )
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, dtype=torch.float32, device=device))
        x_num = torch.from_numpy(numeric).to(device)
        x_cat = torch.from_numpy(categorical).to(device)
        target = torch.from_numpy(np.asarray(y_train, dtype=np.float32)).to(device)
        model = cls(network, pre, weight, params, FitInfo(device=device, best_iteration=0, iterations=0, seconds=0.0))
        model.device = device
        model.reference_codes = [
            int(np.bincount(categorical[:, i]).argmax()) if len(categorical) else 0 for i in range(len(cardinalities))
        ]

        best_score, best_epoch, best_state, history = -1.0, 0, None, []
        n = len(numeric)
        for epoch in range(min(params.max_epochs, params.max_rounds)):
            network.train()
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, params.batch_size):
                index = order[start : start + params.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(network(x_num[index], x_cat[index]), target[index])
                loss.backward()
                optimizer.step()
            score = _pr_auc(y_val, model._logits(val_numeric, val_categorical))
            history.append(score)
            if on_iteration is not None:
                on_iteration(epoch, float(score))  # may raise to stop (a pruned search trial)
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy({k: v.detach().clone() for k, v in network.state_dict().items()})
            elif epoch - best_epoch >= params.patience:
                break
        if best_state is not None:
            network.load_state_dict(best_state)
        network.to("cpu")
        model.device = "cpu"
        model.fit_info = FitInfo(
            device=device,
            best_iteration=best_epoch,
            iterations=len(history),
            seconds=time.perf_counter() - started,
            best_val_pr_auc=best_score,
            history=history,
        )
        return model
