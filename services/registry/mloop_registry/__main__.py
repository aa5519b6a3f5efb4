from mloop_common.runtime import serve
from mloop_registry.app import create_app
from mloop_registry.config import RegistrySettings

settings = RegistrySettings()
serve(create_app(settings), settings)
