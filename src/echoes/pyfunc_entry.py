"""The file MLflow copies into every logged echoes model and runs to get the pyfunc ("models from
code"): nothing is unpickled when a logged model loads."""

from mlflow.models import set_model

from echoes.serving import EchoesPyfunc

set_model(EchoesPyfunc())
