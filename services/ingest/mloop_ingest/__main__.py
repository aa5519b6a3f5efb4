from mloop_common.runtime import serve
from mloop_ingest.app import create_app
from mloop_ingest.config import IngestSettings

settings = IngestSettings()
serve(create_app(settings), settings)
