from mloop_common.runtime import serve
from mloop_drift.app import create_drift_app

app, settings = create_drift_app()
serve(app, settings)
