# Makes conf/ importable as the package ``benchforge.conf`` so Hydra can find it via pkg://.
