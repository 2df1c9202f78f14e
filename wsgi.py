"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`. Settings come from HIGGS_* variables."""

from app import create_app

app = create_app()
