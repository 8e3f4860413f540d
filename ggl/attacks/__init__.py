"""Attack registry: user-facing name -> Attack class."""
from ggl.attacks.analytic import PrecodeAnalytic
from ggl.attacks.base import Attack, Reconstruction
from ggl.attacks.dia import DropoutInversion, OracleIG
from ggl.attacks.latent import GGL
from ggl.attacks.pixel import DLG, IDLG, IGAdam, InvertingGradients

#: name -> Attack subclass
ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (
    DLG, IDLG, InvertingGradients, IGAdam, GGL, PrecodeAnalytic, DropoutInversion, OracleIG)}

__all__ = ["ATTACKS", "Attack", "Reconstruction"]
