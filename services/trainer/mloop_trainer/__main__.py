from mloop_common.runtime import serve
from mloop_trainer.app import create_app
from mloop_trainer.config import TrainerSettings

settings = TrainerSettings()
serve(create_app(settings), settings)
