"""Numeric core of exact (cryptanalytic) extraction of ReLU networks, float64 numpy.

Layer by layer, as in Carlini, Jagielski and Mironov, "Cryptanalytic Extraction of Neural Network
Models" (CRYPTO 2020, arXiv:2003.04884), with the polynomial-time sign step ("neuron wiggle") of
Canales-Martinez, Chavez-Saab, Hambitzer, Rodriguez-Henriquez, Satpute and Shamir, "Polynomial
Time Cryptanalytic Extraction of Neural Network Models" (Eurocrypt 2024, ePrint 2023/1526) and the
sign-step improvements of Foerster, Mullins, Shumailov and Hayes, "Beyond Slow Signs in
High-fidelity Model Extraction" (NeurIPS 2024, arXiv:2406.10011).

Modules (each step a small function whose docstring cites the paper and equation):

- ``network``: the attacker's model of the layers recovered so far (forward, local Jacobian).
- ``access``: the only door to the oracle (a ``BlackBox``); output noise floor estimation.
- ``critical_points``: critical-point search along random lines with precision refinement.
- ``signatures``: signature extraction (weights up to a scalar) and grouping into neurons.
- ``signs``: sign extraction by neuron wiggle (s samples, easy/hard neurons).
- ``solve``: the last layer, solved linearly; the solve also checks the last hidden layer's signs.
- ``align``: server-side scoring helpers (alignment of neuron order and scale).

Notation: ``z_l = A_l h_{l-1} + b_l`` (pre-activation), ``h_l = relu(z_l)``, ``h_0 = x``; the
attacker recovers each hidden neuron's row ``(A_l[k], b_l[k])`` up to a positive scalar.
"""
