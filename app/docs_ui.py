"""GET /docs, the interactive API docs: Swagger UI served from this server, so the page works offline.

The assets come from the flask-swagger-ui package (MIT), which ships Swagger UI's dist folder (Apache-2.0, its
version in dist/VERSION) and follows Swagger UI's releases; only its files are used, flask-smorest renders the page
(app/templates/swagger_ui.html). The page and its assets hold no data, so they are open with an API key
configured (app/auth.py); the page sends the key typed into it with every request, the OpenAPI document's included.
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, send_from_directory

DIST = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
ASSETS_PATH = "/docs/assets/"
VERSION = (DIST / "VERSION").read_text(encoding="utf-8").strip().lstrip("v")

blp = Blueprint("docs_assets", __name__)


@blp.route(f"{ASSETS_PATH}<path:filename>", methods=["GET"])
def asset(filename: str):
    return send_from_directory(DIST, filename, max_age=3600)


CONFIG = {  # flask-smorest's settings for the page
    "OPENAPI_SWAGGER_UI_PATH": "/docs",
    "OPENAPI_SWAGGER_UI_URL": ASSETS_PATH,
    "OPENAPI_SWAGGER_UI_CONFIG": {"swaggerUiVersion": VERSION},
}
