"""An echoes model as an MLflow ``pyfunc``, so ``mlflow models serve -m runs:/ID/model`` answers requests.

Request (``POST /invocations``): ``{"inputs": {"x": [[[...]]], "lengths": [...]}}`` — ``x`` is
(N, T, F), zero-padded; ``lengths`` gives each sequence's valid steps. Response: one record per
sequence with ``label``, ``probability`` and the probability of every class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel

from .tracking import ARTIFACT


class EchoesPyfunc(PythonModel):
    """Loads the saved echoes model from the MLflow model's artifacts; predicts on padded arrays."""

    # The signature gives the input schema; MLflow's type-hint validation would replace it (and warns
    # on every import that predict has no hints).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from .model import Model

        self.model = Model.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201, ARG002
        import pandas as pd

        x = np.asarray(model_input["x"], dtype=np.float32)
        lengths = model_input.get("lengths") if isinstance(model_input, dict) else None
        proba = self.model.predict_proba(x, None if lengths is None else np.asarray(lengths, np.int64))
        names = self.model.class_names
        heads = self.model.heads
        if heads.multi:  # the action ("verb/noun"), its joint probability, then every head's probabilities
            tops = [p.argmax(1) for p in proba.values()]
            frame = pd.DataFrame(np.concatenate(list(proba.values()), 1), columns=[f"p_{n}" for n in names])
            frame.insert(0, "probability", np.prod([p.max(1) for p in proba.values()], 0))
            frame.insert(0, "label", ["/".join(c[t[i]] for c, t in zip(heads.classes, tops, strict=True))
                                      for i in range(len(x))])
            return frame
        if self.model.framewise:  # one list per sequence: a label and a probability per frame
            return pd.DataFrame({"label": [[names[i] for i in p.argmax(1)] for p in proba],
                                 "probability": [p.max(1).tolist() for p in proba]})
        frame = pd.DataFrame(proba, columns=[f"p_{n}" for n in names])
        frame.insert(0, "probability", proba.max(1))
        frame.insert(0, "label", np.asarray(names)[proba.argmax(1)])
        return frame
