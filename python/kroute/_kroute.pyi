# Type stubs of the Rust extension module; the public API (kroute/__init__.py) wraps it.
from typing import Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

DEFAULT_MODEL: str
__version__: str

class Embedder:
    def __init__(self, spec: str) -> None: ...
    def embed(self, texts: List[str]) -> npt.NDArray[np.float32]: ...
    @property
    def dim(self) -> int: ...
    @property
    def model_id(self) -> str: ...
    def info(self) -> str: ...

class Router:
    @staticmethod
    def load(path: str, spec: str) -> Router: ...
    @staticmethod
    def train(path: Optional[str], json: Optional[List[str]], settings: str, spec: str) -> Router: ...
    @staticmethod
    def fit(
        embeddings: npt.NDArray[np.float32],
        path: Optional[str],
        json: Optional[List[str]],
        settings: str,
        spec: str,
    ) -> Router: ...
    def save(self, path: str) -> None: ...
    def route(
        self,
        texts: Optional[List[str]],
        embeddings: Optional[npt.NDArray[np.float32]],
        routing: str,
        explain: bool,
        max_models: Optional[int],
    ) -> str: ...
    def observe(
        self,
        texts: Optional[List[str]],
        embeddings: Optional[npt.NDArray[np.float32]],
        model: str,
        scores: List[float],
        costs: Optional[List[Optional[float]]],
        half_life: Optional[float],
        source: str,
    ) -> int: ...
    def add_models(
        self,
        path: Optional[str],
        json: Optional[List[str]],
        embeddings: Optional[npt.NDArray[np.float32]] = None,
    ) -> List[str]: ...
    def add_model_on_prior(self, model: str, accuracy: float, cost: float) -> None: ...
    def remove_model(self, model: str) -> None: ...
    def reprice(self, prices: Dict[str, Tuple[float, float]]) -> str: ...
    def suggest(
        self,
        n: int,
        path: Optional[str],
        json: Optional[List[str]],
        embeddings: Optional[npt.NDArray[np.float32]] = None,
    ) -> List[str]: ...
    @property
    def models(self) -> List[str]: ...
    def info(self) -> str: ...

def evaluate(
    path: Optional[str],
    json: Optional[List[str]],
    settings: str,
    spec: str,
    embeddings: Optional[npt.NDArray[np.float32]] = None,
) -> str: ...
def check(path: Optional[str], json: Optional[List[str]], missing_cost: str) -> str: ...
def frontier_area(points: List[Tuple[float, float]], reference_cost: float) -> float: ...
def pace(budget: float, alpha: float, spent: float, elapsed: float) -> Tuple[float, bool]: ...
