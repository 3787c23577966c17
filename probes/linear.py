"""Linear probes as scikit-learn estimators, layer by layer, with the controls that make them mean something.

Per layer and fold (folds grouped by image, so no image is on both sides):
    accuracy    the probe on true labels
    majority    always predicting the training fold's most common label
    shuffled    a probe trained on permuted labels (should be at chance)
    control     a Hewitt-Liang control task: labels a fixed random function of a nuisance the model does see
                (the face-colour bin), same label set; selectivity = accuracy - control
Numeric attributes (battery, minute) use ridge regression scored by R^2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probes.activations import ActivationSet

NUMERIC = ("battery", "minute")


class LinearProbe(BaseEstimator, ClassifierMixin):
    """Standardise, then multinomial logistic regression. A training fold with one label (small sets, e.g. the
    answer positions of one question) gives the constant predictor, as the majority baseline does."""

    def __init__(self, C: float = 0.1, max_iter: int = 500):
        self.C = C
        self.max_iter = max_iter

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.pipeline_ = None
        if len(self.classes_) > 1:
            self.pipeline_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter))
            self.pipeline_.fit(X, y)
        return self

    def predict(self, X):
        if self.pipeline_ is None:
            return np.full(len(X), self.classes_[0], dtype=self.classes_.dtype)
        return self.pipeline_.predict(X)


class RidgeProbe(BaseEstimator, RegressorMixin):
    def __init__(self, alpha: float = 10.0):
        self.alpha = alpha

    def fit(self, X, y):
        self.pipeline_ = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha)).fit(X, y)
        return self

    def predict(self, X):
        return self.pipeline_.predict(X)


def make_probe(attribute: str, **kw) -> BaseEstimator:
    return RidgeProbe(**kw) if attribute in NUMERIC else LinearProbe(**kw)


def control_labels(meta: pd.DataFrame, labels: np.ndarray, seed: int) -> np.ndarray:
    """A fixed random map from face-colour bin to the attribute's label set (Hewitt & Liang control task)."""
    rng = np.random.default_rng(seed)
    values = np.unique(labels)
    mapping = {b: values[rng.integers(len(values))] for b in sorted(meta["face_bin"].unique())}
    return np.array([mapping[b] for b in meta["face_bin"]])


def layer_index(site: str) -> int:
    """'adapter' is layer -1, blocks.L.* is L."""
    return -1 if site == "adapter" else int(site.split(".")[1])


def layerwise(
    acts: ActivationSet,
    attribute: str,
    seeds=(0,),
    n_folds: int = 5,
    model_name: str = "model",
    sites: list[str] | None = None,
    **probe_kw,
) -> pd.DataFrame:
    """Tidy rows: one per site x fold x seed, with the probe and its baselines on the same fold."""
    y = acts.labels(attribute)
    groups = acts.meta["image"].to_numpy()
    rows = []
    numeric = attribute in NUMERIC
    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y))  # GroupKFold is deterministic: shuffle rows per seed
        y_s, g_s = y[order], groups[order]
        y_control = control_labels(acts.meta.iloc[order], y_s, seed)
        y_shuffled = rng.permutation(y_s)
        folds = list(GroupKFold(n_splits=n_folds).split(order, y_s, g_s))
        for site in sites or acts.sites:
            X = np.asarray(acts.X[site])[order]
            for fold, (tr, te) in enumerate(folds):
                assert not set(g_s[tr]) & set(g_s[te])
                score = _fit_score(attribute, X, y_s, tr, te, **probe_kw)
                row = {
                    "model": model_name,
                    "site": site,
                    "layer": layer_index(site),
                    "attribute": attribute,
                    "context": acts.meta["context"].iloc[0],
                    "seed": seed,
                    "fold": fold,
                    "metric": "r2" if numeric else "accuracy",
                    "score": score,
                    "shuffled": _fit_score(attribute, X, y_shuffled, tr, te, y_eval=y_s, **probe_kw),
                }
                if not numeric:
                    values, counts = np.unique(y_s[tr], return_counts=True)
                    row["majority"] = float(np.mean(y_s[te] == values[counts.argmax()]))
                    row["control"] = _fit_score(attribute, X, y_control, tr, te, **probe_kw)
                    row["selectivity"] = row["score"] - row["control"]
                    row["chance"] = 1.0 / len(values)
                rows.append(row)
    return pd.DataFrame(rows)


def _fit_score(attribute, X, y, tr, te, y_eval=None, **probe_kw) -> float:
    y_eval = y if y_eval is None else y_eval
    probe = make_probe(attribute, **probe_kw).fit(X[tr], y[tr])
    pred = probe.predict(X[te])
    if attribute in NUMERIC:
        resid = ((y_eval[te] - pred) ** 2).sum()
        total = ((y_eval[te] - y_eval[te].mean()) ** 2).sum()
        return float(1 - resid / total)
    return float(np.mean(pred == y_eval[te]))


def cross_context(
    train: ActivationSet,
    test: ActivationSet,
    attribute: str,
    seeds=(0,),
    model_name: str = "model",
    **probe_kw,
) -> pd.DataFrame:
    """Fit on one context's activations, score on the other's, per site. Images seen in both sets are split in
    seeded halves (fit on one half, test on the other), so no image is on both sides."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        shared = sorted(set(train.meta["image"]) & set(test.meta["image"]))
        held = set(rng.permutation(shared)[: len(shared) // 2]) if shared else set()
        train_mask = ~train.meta["image"].isin(held).to_numpy()
        test_mask = ~test.meta["image"].isin(set(shared) - held).to_numpy()
        y_tr, y_te = train.labels(attribute)[train_mask], test.labels(attribute)[test_mask]
        assert not set(train.meta["image"][train_mask]) & set(test.meta["image"][test_mask])
        for site in train.sites:
            X_tr = np.asarray(train.X[site])[train_mask]
            X_te = np.asarray(test.X[site])[test_mask]
            probe = make_probe(attribute, **probe_kw).fit(X_tr, y_tr)
            pred = probe.predict(X_te)
            within = rng.permutation(len(y_tr))
            rows.append(
                {
                    "model": model_name,
                    "site": site,
                    "layer": layer_index(site),
                    "attribute": attribute,
                    "train_context": train.meta["context"].iloc[0],
                    "test_context": test.meta["context"].iloc[0],
                    "seed": seed,
                    "score": float(np.mean(pred == y_te))
                    if attribute not in NUMERIC
                    else float(1 - ((y_te - pred) ** 2).sum() / ((y_te - y_te.mean()) ** 2).sum()),
                    "shuffled": float(
                        np.mean(make_probe(attribute, **probe_kw).fit(X_tr, y_tr[within]).predict(X_te) == y_te)
                    )
                    if attribute not in NUMERIC
                    else np.nan,
                    "chance": 1.0 / len(np.unique(y_tr)) if attribute not in NUMERIC else 0.0,
                    "n_test": int(test_mask.sum()),
                }
            )
    return pd.DataFrame(rows)
