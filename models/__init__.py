"""The CLIP-AE model, the UGCT baseline and ``clipae-train`` (see ``models/README.md``).

Start at ``clipae.py`` (the model), ``train.py`` (the command) and ``run.py`` (inference on a run).
"""
