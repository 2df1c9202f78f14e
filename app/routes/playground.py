"""The browser playground: a static page (app/static/playground.html) with its scripts and style
(app/static/playground/), calling the API from the same origin. No build step: the files are served as they are.

The assets are `GET /playground?asset=NAME`, on the page's own path: with an API key configured, app/auth.py opens
`/playground` (the page holds no data; its API calls carry the key the user types), and a browser cannot add the
key to a <script> or <link> request. Relative URLs keep the page working under a proxy's path prefix.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, redirect, request, send_from_directory

STATIC = Path(__file__).resolve().parent.parent / "static"
PAGE = STATIC / "playground.html"
ASSETS = STATIC / "playground"
TYPES = {".js": "text/javascript", ".css": "text/css"}

blp = Blueprint("playground", __name__)


@blp.route("/playground", methods=["GET"])
def playground():
    name = request.args.get("asset")
    if name is None:
        return send_from_directory(STATIC, PAGE.name, mimetype="text/html", max_age=0)
    suffix = Path(name).suffix
    if suffix not in TYPES or "/" in name or name.startswith("."):
        abort(404)
    return send_from_directory(ASSETS, name, mimetype=TYPES[suffix], max_age=0)


@blp.route("/", methods=["GET"])
def home():
    return redirect("playground", code=302)
