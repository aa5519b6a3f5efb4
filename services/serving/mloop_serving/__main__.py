import os

from mloop_serving.config import ServingSettings

settings = ServingSettings()
# OpenMP and BLAS size their thread pools once, when they load: set before numpy and scikit-learn are imported.
if settings.native_threads:
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(settings.native_threads))

from mloop_common.runtime import serve  # noqa: E402
from mloop_serving.app import create_app  # noqa: E402

serve(create_app(settings), settings)
