"""Model families as plain numpy parameters: fitted with scikit-learn, evaluated and stored without it.

Every model here predicts in "target space" (the latency itself, or its log): the :class:`predictors.Predictor`
around it owns the transform. Each model turns into a JSON-able dict (``to_dict``) and back (``from_dict``)
and is checked on the way in, so a damaged file fails with a clear error instead of producing garbage.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["LinearModel", "MLPModel", "Model", "PredictorFormatError", "TreeEnsemble"]


class PredictorFormatError(ValueError):
    """A predictor file is corrupted, of another format or version; the message says what is wrong."""


def _array(d: dict[str, Any], name: str, ndim: int, dtype: Any = np.float64) -> np.ndarray:
    try:
        arr = np.asarray(d[name], dtype=dtype)
    except KeyError:
        raise PredictorFormatError(f"model field {name!r} is missing") from None
    except (TypeError, ValueError):
        raise PredictorFormatError(f"model field {name!r} is not a numeric array") from None
    if arr.ndim != ndim:
        raise PredictorFormatError(
            f"model field {name!r} must have {ndim} dimension(s), got shape {arr.shape}"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise PredictorFormatError(f"model field {name!r} holds non-finite numbers")
    return arr


class Model:
    """Base of the model families: ``predict`` in target space, optional ``std``, JSON round trip."""

    family = ""
    has_std = False

    def predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def std(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"a single {self.family} model gives no uncertainty")

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def from_dict(d: dict[str, Any], n_features: int) -> Model:
        family = d.get("family") if isinstance(d, dict) else None
        cls = _FAMILIES.get(family)  # type: ignore[arg-type]
        if cls is None:
            raise PredictorFormatError(f"unknown model family {family!r}; known: {sorted(_FAMILIES)}")
        return cls._from_dict(d, n_features)


# ------------------------------------------------------------------------------------------------ linear
class LinearModel(Model):
    """``y = ((x - mean) / scale) @ coef + intercept``, with a predictive std from the ridge posterior.

    ``cov`` is ``(Zc'Zc + alpha I)^-1`` over the standardised, centred training features and ``sigma`` the
    residual std, so ``std(x) = sigma * sqrt(1 + z' cov z)`` (larger away from the training data).
    """

    family = "linear"
    has_std = True

    def __init__(self, mean, scale, coef, intercept, cov, sigma, z_mean):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.cov = np.asarray(cov, dtype=np.float64)
        self.sigma = float(sigma)
        self.z_mean = np.asarray(z_mean, dtype=np.float64)

    def _z(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._z(X) @ self.coef + self.intercept

    def std(self, X: np.ndarray) -> np.ndarray:
        zc = self._z(X) - self.z_mean
        leverage = np.einsum("ij,jk,ik->i", zc, self.cov, zc)
        return self.sigma * np.sqrt(1.0 + np.maximum(leverage, 0.0))

    @classmethod
    def fit_ridge(cls, X: np.ndarray, y: np.ndarray, alphas: np.ndarray | None = None) -> LinearModel:
        """Ridge on standardised features, alpha by efficient leave-one-out (scikit-learn RidgeCV)."""
        from sklearn.linear_model import RidgeCV

        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-12] = 1.0  # constant columns: leave them at zero after centring
        Z = (X - mean) / scale
        alphas = np.logspace(-3, 3, 13) if alphas is None else alphas
        model = RidgeCV(alphas=alphas).fit(Z, y)
        alpha = float(model.alpha_)
        return cls._with_posterior(mean, scale, model.coef_, float(model.intercept_), Z, y, alpha)

    @classmethod
    def fit_additive(cls, X: np.ndarray, y: np.ndarray) -> LinearModel:
        """Non-negative per-feature costs plus a free overhead (a lookup table fitted by NNLS)."""
        from sklearn.linear_model import LinearRegression

        model = LinearRegression(positive=True).fit(X, y)
        n = X.shape[1]
        return cls._with_posterior(np.zeros(n), np.ones(n), model.coef_, float(model.intercept_), X, y, 1e-6)

    @classmethod
    def _with_posterior(cls, mean, scale, coef, intercept, Z, y, alpha) -> LinearModel:
        z_mean = Z.mean(axis=0)
        Zc = Z - z_mean
        gram = Zc.T @ Zc + alpha * np.eye(Z.shape[1])
        cov = np.linalg.pinv(gram)
        resid = y - (Z @ coef + intercept)
        dof = float(np.sum(cov * (Zc.T @ Zc)))  # trace of the hat matrix, without forming it
        sigma = float(np.sqrt(np.sum(resid**2) / max(len(y) - dof - 1.0, 1.0)))
        return cls(mean, scale, np.asarray(coef, dtype=np.float64), intercept, cov, sigma, z_mean)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "cov": self.cov.tolist(),
            "sigma": self.sigma,
            "z_mean": self.z_mean.tolist(),
        }

    @classmethod
    def _from_dict(cls, d: dict[str, Any], n_features: int) -> LinearModel:
        vecs = {k: _array(d, k, 1) for k in ("mean", "scale", "coef", "z_mean")}
        for k, v in vecs.items():
            if v.shape != (n_features,):
                raise PredictorFormatError(
                    f"linear model field {k!r} has {v.shape[0]} entries, expected {n_features}"
                )
        if np.any(vecs["scale"] == 0):
            raise PredictorFormatError("linear model field 'scale' holds zeros")
        cov = _array(d, "cov", 2)
        if cov.shape != (n_features, n_features):
            raise PredictorFormatError(
                f"linear model covariance has shape {cov.shape}, expected ({n_features}, {n_features})"
            )
        intercept, sigma = _array(d, "intercept", 0), _array(d, "sigma", 0)
        return cls(
            vecs["mean"], vecs["scale"], vecs["coef"], float(intercept), cov, float(sigma), vecs["z_mean"]
        )


# ------------------------------------------------------------------------------------------------ trees
class TreeEnsemble(Model):
    """Sum of regression trees plus a base value (gradient boosting), evaluated in numpy.

    Trees are stored as flat node arrays (scikit-learn's layout): ``feature``, ``threshold``, ``left``, ``right``
    (-1 for leaves) and ``value`` (the learning rate already applied). Samples go left when
    ``x[feature] <= threshold``, comparing ``x`` rounded to float32 as scikit-learn does.
    """

    family = "trees"

    def __init__(self, base: float, trees: list[dict[str, np.ndarray]]):
        self.base = float(base)
        self.trees = trees
        self._depths = [_tree_depth(tree["left"], tree["right"]) for tree in trees]

    def predict(self, X: np.ndarray) -> np.ndarray:
        Xf = X.astype(np.float32).astype(np.float64)
        rows = np.arange(X.shape[0])
        out = np.full(X.shape[0], self.base)
        # One tree at a time, all samples at once: much faster than gathering (samples x trees) blocks.
        for t, depth in zip(self.trees, self._depths):
            feature, threshold, left, right = t["feature"], t["threshold"], t["left"], t["right"]
            node = np.zeros(X.shape[0], dtype=np.int64)
            for _ in range(depth):
                nxt = np.where(Xf[rows, feature[node]] <= threshold[node], left[node], right[node])
                node = np.where(nxt >= 0, nxt, node)  # leaves stay put
            out += t["value"][node]
        return out

    @classmethod
    def fit_gbdt(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        seed: int,
        n_estimators: int = 400,
        max_depth: int = 4,
        learning_rate: float = 0.05,
        subsample: float = 0.8,
        min_samples_leaf: int = 2,
        max_features: float | None = None,
        loss: str = "squared_error",
        alpha: float = 0.9,
    ) -> TreeEnsemble:
        """Boosted trees by scikit-learn's ``GradientBoostingRegressor``, copied into numpy arrays.

        ``loss`` is ``squared_error`` (the conditional mean), ``absolute_error`` (the median) or ``huber``
        (squared for the ``alpha`` fraction of smallest residuals, absolute beyond): the robust losses keep
        heavy-tailed measurement noise (a board that was busy for one cell) from pulling the fit.
        """
        from sklearn.ensemble import GradientBoostingRegressor

        if loss not in ("squared_error", "absolute_error", "huber"):
            raise ValueError(f"loss must be 'squared_error', 'absolute_error' or 'huber', got {loss!r}")
        gb = GradientBoostingRegressor(
            loss=loss,
            alpha=alpha,
            n_estimators=n_estimators,
            max_depth=max_depth,
            learning_rate=learning_rate,
            subsample=subsample,
            min_samples_leaf=min_samples_leaf,
            max_features=max_features,
            random_state=seed,
        ).fit(X, y)
        base = float(np.asarray(gb.init_.constant_).reshape(-1)[0])
        trees = []
        for est in gb.estimators_[:, 0]:
            t = est.tree_
            trees.append(
                {
                    "feature": np.maximum(t.feature, 0).astype(np.int64),
                    "threshold": t.threshold.astype(np.float64),
                    "left": t.children_left.astype(np.int64),
                    "right": t.children_right.astype(np.int64),
                    "value": t.value[:, 0, 0].astype(np.float64) * gb.learning_rate,
                }
            )
        return cls(base, trees)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "base": self.base,
            "trees": [{k: v.tolist() for k, v in tree.items()} for tree in self.trees],
        }

    @classmethod
    def _from_dict(cls, d: dict[str, Any], n_features: int) -> TreeEnsemble:
        raw = d.get("trees")
        if not isinstance(raw, list):
            raise PredictorFormatError("tree model field 'trees' is missing or not a list")
        trees = []
        for i, t in enumerate(raw):
            if not isinstance(t, dict):
                raise PredictorFormatError(f"tree {i} is not an object")
            tree = {
                "feature": _array(t, "feature", 1, np.int64),
                "threshold": _array(t, "threshold", 1),
                "left": _array(t, "left", 1, np.int64),
                "right": _array(t, "right", 1, np.int64),
                "value": _array(t, "value", 1),
            }
            k = len(tree["value"])
            if k == 0 or any(len(v) != k for v in tree.values()):
                raise PredictorFormatError(f"tree {i}: node arrays are empty or of different lengths")
            idx = np.arange(k)
            for side in ("left", "right"):
                child = tree[side]
                # children come after their parent: guarantees every descent ends in a leaf
                if np.any((child != -1) & ((child <= idx) | (child >= k))):
                    raise PredictorFormatError(f"tree {i}: {side} child indices are out of order or range")
            if np.any((tree["left"] == -1) != (tree["right"] == -1)):
                raise PredictorFormatError(f"tree {i}: a node has exactly one child")
            if np.any((tree["feature"] < 0) | (tree["feature"] >= n_features)):
                raise PredictorFormatError(f"tree {i}: feature index out of range [0, {n_features})")
            trees.append(tree)
        return cls(float(_array(d, "base", 0)), trees)


def _tree_depth(left: np.ndarray, right: np.ndarray) -> int:
    depth = np.zeros(len(left), dtype=np.int64)
    for node in range(len(left)):  # parents precede children
        for child in (left[node], right[node]):
            if child >= 0:
                depth[child] = depth[node] + 1
    return int(depth.max()) if len(depth) else 0


# ------------------------------------------------------------------------------------------------ MLP
class MLPModel(Model):
    """A ReLU multilayer perceptron on standardised inputs with a standardised target."""

    family = "mlp"

    def __init__(self, mean, scale, weights, biases, y_mean: float, y_scale: float):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.weights = [np.asarray(w, dtype=np.float64) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float64) for b in biases]
        self.y_mean = float(y_mean)
        self.y_scale = float(y_scale)

    def predict(self, X: np.ndarray) -> np.ndarray:
        h = (X - self.mean) / self.scale
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0] * self.y_scale + self.y_mean

    @classmethod
    def fit_mlp(
        cls, X: np.ndarray, y: np.ndarray, seed: int, hidden: tuple[int, ...] = (64,), alpha: float = 1.0
    ) -> MLPModel:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-12] = 1.0
        y_mean, y_scale = float(y.mean()), float(y.std()) or 1.0
        net = MLPRegressor(
            hidden_layer_sizes=hidden, alpha=alpha, solver="lbfgs", max_iter=200, random_state=seed
        )
        # One BLAS thread: these products (samples x features x 64) are too small to share, and on a busy
        # 2-core machine OpenBLAS's threads spin waiting for each other: fitting on 2,000 NB201 cells took 53 s
        # wall / 25 s CPU with 2 threads against 3.6 s / 1.7 s with one (load average 7).
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            net.fit((X - mean) / scale, (y - y_mean) / y_scale)
        return cls(mean, scale, net.coefs_, net.intercepts_, y_mean, y_scale)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": [w.tolist() for w in self.weights],
            "biases": [b.tolist() for b in self.biases],
            "y_mean": self.y_mean,
            "y_scale": self.y_scale,
        }

    @classmethod
    def _from_dict(cls, d: dict[str, Any], n_features: int) -> MLPModel:
        mean, scale = _array(d, "mean", 1), _array(d, "scale", 1)
        if mean.shape != (n_features,) or scale.shape != (n_features,) or np.any(scale == 0):
            raise PredictorFormatError(f"mlp input standardisation must have {n_features} non-zero entries")
        ws, bs = d.get("weights"), d.get("biases")
        if not isinstance(ws, list) or not isinstance(bs, list) or not ws or len(ws) != len(bs):
            raise PredictorFormatError(
                "mlp fields 'weights' and 'biases' must be lists of equal, non-zero length"
            )
        weights = [_array({"w": w}, "w", 2) for w in ws]
        biases = [_array({"b": b}, "b", 1) for b in bs]
        width = n_features
        for i, (w, b) in enumerate(zip(weights, biases)):
            if w.shape[0] != width or b.shape != (w.shape[1],):
                raise PredictorFormatError(
                    f"mlp layer {i}: shapes {w.shape} / {b.shape} do not chain from width {width}"
                )
            width = w.shape[1]
        if width != 1:
            raise PredictorFormatError(f"mlp output width is {width}, expected 1")
        return cls(
            mean, scale, weights, biases, float(_array(d, "y_mean", 0)), float(_array(d, "y_scale", 0))
        )


_FAMILIES: dict[str, type[Model]] = {"linear": LinearModel, "trees": TreeEnsemble, "mlp": MLPModel}
