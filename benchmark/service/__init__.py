"""The victim as a service (``server``), attacks as clients in their own process (``attacker``,
``client``), over a plain-bytes protocol (``protocol``); ``http`` serves the same deployment on a
localhost port for attack code written elsewhere."""
