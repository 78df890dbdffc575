"""Features, rule-strategy signals and the Dataset, free of lookahead.

Importing this package registers every built-in feature group (:data:`FEATURES`) and strategy
(:data:`STRATEGIES`).
"""

from rltrade.features import forecast as _forecast  # noqa: F401  (registers; sklearn lazily)
from rltrade.features import indicators as _indicators  # noqa: F401  (registers)
from rltrade.features import market as _market  # noqa: F401  (registers)
from rltrade.features.base import FEATURES, BarArrays, FeatureDef, register_feature
from rltrade.features.dataset import Dataset, build_dataset, compute_features, compute_signals
from rltrade.features.normalize import Normalizer
from rltrade.features.spec import FeatureSpec
from rltrade.features.strategies import STRATEGIES, Strategy, register_strategy

__all__ = [
    "FEATURES",
    "STRATEGIES",
    "BarArrays",
    "Dataset",
    "FeatureDef",
    "FeatureSpec",
    "Normalizer",
    "Strategy",
    "build_dataset",
    "compute_features",
    "compute_signals",
    "register_feature",
    "register_strategy",
]
