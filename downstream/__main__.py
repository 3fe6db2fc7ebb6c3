"""``python -m downstream transfer|rankup --root RUN ...`` (see :func:`downstream.experiments.main`)."""

from downstream.experiments import main

main()
