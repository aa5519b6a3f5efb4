from mloop_common.runtime import serve
from mloop_serving.app import create_serving_app

app, settings = create_serving_app()
serve(app, settings)
