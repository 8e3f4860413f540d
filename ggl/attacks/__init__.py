"""Attack registry: user-facing name -> Attack class (``ggl list`` shows them)."""
from ggl.attacks.analytic import PrecodeAnalytic
from ggl.attacks.base import Attack, Reconstruction
from ggl.attacks.cpa import CocktailParty
from ggl.attacks.dia import DropoutInversion, OracleIG
from ggl.attacks.dlf import DLF
from ggl.attacks.grnn import GRNN
from ggl.attacks.latent import GGL
from ggl.attacks.pixel import DLG, IDLG, IGAdam, InvertingGradients
from ggl.attacks.rtf import RobbingTheFed
from ggl.attacks.weight_update import IGMulti
from ggl.registry import Registry

#: name -> Attack subclass
ATTACKS: Registry[type[Attack]] = Registry("attack")
for _cls in (DLG, IDLG, InvertingGradients, IGAdam, IGMulti, DLF, GGL, PrecodeAnalytic,
             DropoutInversion, OracleIG, RobbingTheFed, GRNN,
             CocktailParty):
    ATTACKS.add(_cls.name, _cls, _cls.summary)

__all__ = ["ATTACKS", "Attack", "Reconstruction"]
