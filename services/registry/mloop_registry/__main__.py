from mloop_common.runtime import serve
from mloop_registry.app import create_registry_app

app, settings = create_registry_app()
serve(app, settings)
