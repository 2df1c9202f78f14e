"""The Flask application (HTTP only; model work lives in model_pool/).

create_app is imported lazily so that gunicorn's master, which reads app.settings for its config, never loads
torch, the models or the metrics files.
"""


def create_app(*args, **kwargs):
    from .factory import create_app as _create_app

    return _create_app(*args, **kwargs)
