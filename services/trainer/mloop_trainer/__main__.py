from mloop_common.runtime import serve
from mloop_trainer.app import create_trainer_app

app, settings = create_trainer_app()
serve(app, settings)
