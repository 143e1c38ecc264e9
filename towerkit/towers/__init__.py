"""towerkit.towers: sequence and multi-interest query towers."""

from towerkit.towers.comirec_dr import ComiRecDR
from towerkit.towers.comirec_sa import ComiRecSA
from towerkit.towers.gru import GRUTower
from towerkit.towers.mind import MIND
from towerkit.towers.sasrec import SASRecTower
from towerkit.towers.youtube_dnn import YouTubeDNN

__all__ = ["ComiRecDR", "ComiRecSA", "GRUTower", "MIND", "SASRecTower", "YouTubeDNN"]
