"""Model zoo: importing this package registers every model family."""

from edgeseg.models import ultralightunet  # noqa: F401  (registers the family)
from edgeseg.models._registry import (
    ModelCfg,
    PaperFigures,
    create_model,
    get_model_cfg,
    list_models,
    register_model,
)

__all__ = ["ModelCfg", "PaperFigures", "create_model", "get_model_cfg", "list_models", "register_model"]
