from mloop_common.runtime import serve
from mloop_ingest.app import create_ingest_app

app, settings = create_ingest_app()
serve(app, settings)
