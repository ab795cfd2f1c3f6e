"""Hub tools: ``export`` (a self-contained repository folder with remote code and a model card) and ``push``."""

from .errors import ExportError, PushError
from .export import export_model
from .model_card import CardInfo, render_model_card, state_size
from .push import push_folder

__all__ = ["CardInfo", "ExportError", "PushError", "export_model", "push_folder", "render_model_card", "state_size"]
