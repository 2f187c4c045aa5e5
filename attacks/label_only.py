"""label_only: KnockOff trained on the victim's top-1 labels only, the adaptive attack against output
perturbation that keeps the label.

Reverse sigmoid (Lee et al., "Defending Against NN Model Stealing Attacks Using Deceptive
Perturbations", IEEE S&P Workshops 2019), the top-1-preserving variant of prediction poisoning
(MAD; Orekondy, Schiele, Fritz, "Prediction Poisoning: Towards Defenses Against DNN Model Stealing
Attacks", ICLR 2020) and rounding change the probabilities an answer carries, never its label. A
substitute trained on the one-hot labels (cross-entropy; Tramer et al., "Stealing Machine Learning
Models via Prediction APIs", USENIX Security 2016, label-only extraction; adaptive evaluation in
the sense of Tramer et al., "On Adaptive Attacks to Adversarial Example Defenses", NeurIPS 2020)
is exactly the substitute it would have trained without the defense. Adaptive misinformation
(Kariyappa & Qureshi, CVPR 2020) changes labels of out-of-distribution queries, so there the
labels are poisoned too.

This is ``knockoff`` with ``labels_only=true`` as its default (every knockoff option applies;
``attacks/knockoff.py``, ``attacks/_baseline.py``). Cost: the same queries as knockoff; what it
loses is the dark knowledge of honest soft labels (on the tiny test victim at 1,000 queries the
undefended label-only substitute agrees less with the victim than the soft one;
``tests/attacks/test_adaptive_attacks.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from attacks.knockoff import KnockOff
from benchmark.plugins import ATTACKS


@ATTACKS.register("label_only")
@dataclass(frozen=True)
class LabelOnly(KnockOff):
    """KnockOff on the victim's top-1 labels only (against label-keeping output perturbation)."""

    labels_only: bool = True
