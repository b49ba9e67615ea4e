"""The file MLflow runs to build churnlens's pyfunc model ("models from code": nothing of
the model is pickled; see :mod:`churnlens.tracking.pyfunc`)."""

import mlflow

from churnlens.tracking.pyfunc import pyfunc_class

mlflow.models.set_model(pyfunc_class()())
