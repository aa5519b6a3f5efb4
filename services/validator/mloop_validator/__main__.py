from mloop_common.runtime import serve
from mloop_validator.app import create_validator_app

app, settings = create_validator_app()
serve(app, settings)
