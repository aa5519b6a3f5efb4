from mloop_common.runtime import serve
from mloop_serving.app import create_app
from mloop_serving.config import ServingSettings

settings = ServingSettings()
serve(create_app(settings), settings)
