from mloop_common.runtime import serve
from mloop_drift.app import create_app
from mloop_drift.config import DriftSettings

settings = DriftSettings()
serve(create_app(settings), settings)
