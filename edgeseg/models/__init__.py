"""Model zoo: importing this package registers every model family."""

from edgeseg.models import (  # noqa: F401  (importing a family module registers its models)
    baselines,
    pam_unet,
    ultralightunet,
    ultralightunet3d,
    unetr,
)
from edgeseg.models._registry import (
    ModelCfg,
    PaperFigures,
    create_model,
    get_model_cfg,
    list_models,
    register_model,
)

__all__ = ["ModelCfg", "PaperFigures", "create_model", "get_model_cfg", "list_models", "register_model"]
