from mloop_common.runtime import serve
from mloop_ui.app import create_app
from mloop_ui.config import UiSettings

settings = UiSettings()
serve(create_app(settings), settings)
