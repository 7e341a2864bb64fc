"""The Jinja templates of the model card and the dataset card (read by si_hf.hub).

pyproject.toml installs this directory as the package `si_hf.model_cards`, so an editable install and
a wheel install both carry the templates.
"""
