"""Sweeps: many runs of one profile that differ on a few axes, ranked by quality per GPU-hour.

    definition.py  axes from --grid / --range / [sweep] -> the list of trial configurations
    folder.py      the sweep folder (sweeps/<profile>-<UTC ts>/) and its files
    fit.py         the memory estimate of every configuration, before anything runs
    engine.py      the loop: one trial at a time (or one per GPU), Optuna study and pruning
    trial.py       a trial's own process: plan, create an ordinary run folder, train
    compare.py     the table, the recommendation and the loss curves of any runs
    cli.py         `workbench sweep ...`, `workbench sweeps`, `workbench runs compare`

Every trial is an ordinary run: the sweep only decides overrides, starts the run's process,
reads its events and writes its own bookkeeping next to it. No torch is imported here.
"""
