from mloop_common.runtime import serve
from mloop_validator.app import create_app
from mloop_validator.config import ValidatorSettings

settings = ValidatorSettings()
serve(create_app(settings), settings)
